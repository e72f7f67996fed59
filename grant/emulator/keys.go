package emulator

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mp-hsm/mp-hsm/signer"
)

// tokenKey signs the access tokens and Altinn tokens the emulator issues,
// with RS256 as Maskinporten does.
type tokenKey struct {
	signer crypto.Signer
	pub    *rsa.PublicKey
	jwk    *signer.JWK // as published on /jwks; its kid is the RFC 7638 thumbprint
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
	jwk, err := signer.PublicJWK(pub, "RS256", "")
	if err != nil {
		return nil, fmt.Errorf("Config.Key: %w", err)
	}
	return &tokenKey{signer: k, pub: pub, jwk: jwk}, nil
}

func (k *tokenKey) sign(claims jwt.MapClaims) (string, error) {
	t := jwt.NewWithClaims(signer.RS256, claims)
	t.Header = map[string]any{"alg": "RS256", "kid": k.jwk.Kid}
	return t.SignedString(k.signer)
}

// randomID returns n random bytes, base64url, as Maskinporten's token jti.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
