package emulator

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
)

// tokenKey signs the access tokens and Altinn tokens the emulator issues,
// with RS256 as Maskinporten does.
type tokenKey struct {
	signer crypto.Signer
	pub    *rsa.PublicKey
	kid    string // RFC 7638 thumbprint
}

func newTokenKey(k crypto.Signer) (*tokenKey, error) {
	if k == nil {
		var err error
		if k, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, err
		}
	}
	pub, ok := k.Public().(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("Config.Key must be an RSA key (Maskinporten signs with RS256), not %T", k.Public())
	}
	return &tokenKey{signer: k, pub: pub, kid: thumbprint(pub)}, nil
}

var b64 = base64.RawURLEncoding

// thumbprint is the RFC 7638 JWK thumbprint of an RSA public key: SHA-256
// over the required members in lexicographic order, without whitespace.
func thumbprint(pub *rsa.PublicKey) string {
	e := big.NewInt(int64(pub.E)).Bytes()
	canon := `{"e":"` + b64.EncodeToString(e) + `","kty":"RSA","n":"` + b64.EncodeToString(pub.N.Bytes()) + `"}`
	sum := sha256.Sum256([]byte(canon))
	return b64.EncodeToString(sum[:])
}

// jwk is the public key as published on /jwks.
func (k *tokenKey) jwk() map[string]string {
	return map[string]string{
		"kty": "RSA",
		"use": "sig",
		"alg": "RS256",
		"kid": k.kid,
		"n":   b64.EncodeToString(k.pub.N.Bytes()),
		"e":   b64.EncodeToString(big.NewInt(int64(k.pub.E)).Bytes()),
	}
}

// sign returns a compact JWS over claims, header {"kid","alg":"RS256"}.
func (k *tokenKey) sign(claims any) (string, error) {
	hdr, err := json.Marshal(map[string]string{"kid": k.kid, "alg": "RS256"})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := b64.EncodeToString(hdr) + "." + b64.EncodeToString(payload)
	digest := sha256.Sum256([]byte(input))
	sig, err := k.signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return "", err
	}
	return input + "." + b64.EncodeToString(sig), nil
}

// randomID returns n random bytes, base64url: the form of Maskinporten's
// access-token jti.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b64.EncodeToString(b)
}
