// Package signer provides crypto.Signers that carry their X.509 certificate
// chain, and JWS signing methods for github.com/golang-jwt/jwt/v5 that sign
// with any crypto.Signer.
//
// The primary Signer is backed by a key on a smart card or HSM: it is in
// package signer/p11, the only part that speaks PKCS#11 and so needs cgo.
// This package needs none: FromPEM and FromPKCS12 give the same interface
// over a key held in a file, for soft enterprise certificates and for
// development, and NewFileSigner over any crypto.Signer a program holds
// (a KMS client, or a key that github.com/ThalesGroup/crypto11 opened:
// see docs/crypto11.md).
//
// The JWS methods (RS256, RS384, RS512, PS256, ES256, ES384) are package
// variables; they are never registered in golang-jwt's global registry, so
// they cannot change how other code in the process verifies tokens.
package signer

import (
	"crypto"
	"crypto/x509"
)

// Signer is a crypto.Signer that knows the certificate chain of its key.
//
// Sign follows the crypto.Signer conventions of the standard library: RSA
// signatures are PKCS #1 v1.5 unless opts is an *rsa.PSSOptions, and ECDSA
// signatures are ASN.1 DER. The JWS methods in this package convert to the
// forms JWS needs.
type Signer interface {
	crypto.Signer

	// Chain returns the certificate chain: the leaf certificate of the key
	// first, then each issuer in order. It is empty when no certificate for
	// the key is known; a grant must then identify the key by kid. Callers
	// must not modify the returned slice.
	Chain() []*x509.Certificate
}
