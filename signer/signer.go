// Package signer provides crypto.Signers that carry their X.509 certificate
// chain, and JWS signing methods for github.com/golang-jwt/jwt/v5 that sign
// with any crypto.Signer.
//
// The key on a smart card or HSM is in package signer/p11, the only part
// that needs cgo. This package offers the same interface over a key file
// (FromPEM, FromPKCS12), for soft enterprise certificates and development,
// and over any crypto.Signer a program holds (NewFileSigner: a KMS client,
// a crypto11 key, see docs/crypto11.md).
//
// The JWS methods (RS256, RS384, RS512, PS256, ES256, ES384) are package
// variables, never registered in golang-jwt's global registry, so they
// cannot change how other code in the process verifies tokens.
package signer

import (
	"crypto"
	"crypto/x509"
)

// Signer is a crypto.Signer that knows the certificate chain of its key.
// Sign follows the standard library: RSA signatures are PKCS #1 v1.5 unless
// opts is an *rsa.PSSOptions, ECDSA signatures ASN.1 DER; the JWS methods
// convert to what JWS needs.
type Signer interface {
	crypto.Signer

	// Chain returns the chain, leaf first, then each issuer in order; empty
	// when no certificate is known (a grant must then use a kid). Callers
	// must not modify it.
	Chain() []*x509.Certificate
}
