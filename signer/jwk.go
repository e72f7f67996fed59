package signer

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
)

// JWK is a public key as a JSON Web Key (RFC 7517), with the members
// Samarbeidsportalen asks for when a key is registered on a client.
type JWK struct {
	Kty string `json:"kty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	Kid string `json:"kid,omitempty"`
	// RSA
	N string `json:"n,omitempty"`
	E string `json:"e,omitempty"`
	// EC
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

// PublicJWK returns pub as a JWK with use "sig", the given alg (empty: the
// key's DefaultAlgorithm) and kid (empty: the RFC 7638 thumbprint).
func PublicJWK(pub crypto.PublicKey, alg, kid string) (*JWK, error) {
	j, err := bareJWK(pub)
	if err != nil {
		return nil, err
	}
	m, err := defaultMethod(pub)
	if alg != "" {
		if m, err = Method(alg); err == nil {
			err = m.Compatible(pub)
		}
	}
	if err != nil {
		return nil, err
	}
	j.Use, j.Alg, j.Kid = "sig", m.alg, cmp.Or(kid, j.thumbprint())
	return j, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func bareJWK(pub crypto.PublicKey) (*JWK, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return &JWK{Kty: "RSA", N: b64(k.N.Bytes()), E: b64(big.NewInt(int64(k.E)).Bytes())}, nil
	case *ecdsa.PublicKey:
		point, err := k.Bytes()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
		}
		size := (len(point) - 1) / 2
		return &JWK{Kty: "EC", Crv: k.Curve.Params().Name, X: b64(point[1 : 1+size]), Y: b64(point[1+size:])}, nil
	}
	return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
}

// Thumbprint returns the RFC 7638 JWK SHA-256 thumbprint of pub, base64url
// without padding: the kid mp-hsm uses unless told otherwise.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	j, err := bareJWK(pub)
	if err != nil {
		return "", err
	}
	return j.thumbprint(), nil
}

// thumbprint is Thumbprint of a bare JWK: RFC 7638's required members only,
// in lexicographic order, no white space; the values need no JSON escaping.
func (j *JWK) thumbprint() string {
	canon := fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, j.E, j.N)
	if j.Kty == "EC" {
		canon = fmt.Sprintf(`{"crv":"%s","kty":"EC","x":"%s","y":"%s"}`, j.Crv, j.X, j.Y)
	}
	sum := sha256.Sum256([]byte(canon))
	return b64(sum[:])
}

// PublicKey decodes the JWK's public key (RSA, or EC on P-256 or P-384).
func (j *JWK) PublicKey() (crypto.PublicKey, error) {
	dec := base64.RawURLEncoding.DecodeString
	switch j.Kty {
	case "RSA":
		n, err1 := dec(j.N)
		e, err2 := dec(j.E)
		if err1 != nil || err2 != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, fmt.Errorf("%w: malformed RSA JWK", ErrUnsupportedKey)
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	case "EC":
		curve := map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384()}[j.Crv]
		if curve == nil {
			return nil, fmt.Errorf("%w: curve %q", ErrUnsupportedKey, j.Crv)
		}
		x, err1 := dec(j.X)
		y, err2 := dec(j.Y)
		size := (curve.Params().BitSize + 7) / 8
		if err1 != nil || err2 != nil || len(x) != size || len(y) != size {
			return nil, fmt.Errorf("%w: malformed EC JWK", ErrUnsupportedKey)
		}
		point := append(append([]byte{4}, x...), y...)
		return ecdsa.ParseUncompressedPublicKey(curve, point)
	}
	return nil, fmt.Errorf("%w: kty %q", ErrUnsupportedKey, j.Kty)
}
