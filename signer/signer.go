// Package signer provides crypto.Signers that carry their X.509 certificate
// chain, over a key file (FromPEM, FromPKCS12) or any crypto.Signer a program
// holds (NewFileSigner: a KMS client, a crypto11 key, see docs/crypto11.md);
// a token key is in package signer/p11, the only part that needs cgo. Its JWS
// methods for github.com/golang-jwt/jwt/v5 sign with any crypto.Signer and are
// never registered in golang-jwt's global registry, so they cannot change how
// other code in the process verifies tokens.
package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
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

// Errors for a key, key file, certificate or algorithm that cannot be used,
// wrapped with details; test for them with errors.Is.
var (
	// ErrKeyTooSmall reports an RSA key shorter than Maskinporten's 2048 bits.
	ErrKeyTooSmall = errors.New("signer: key too small")
	// ErrCertificateMismatch reports a certificate for another public key.
	ErrCertificateMismatch = errors.New("signer: certificate does not match the key")
	// ErrUnsupportedKey reports a key that cannot sign a grant: only RSA and ECDSA on P-256 or P-384 can.
	ErrUnsupportedKey = errors.New("signer: unsupported key")
	// ErrUnsupportedAlgorithm reports a JWS alg this package does not implement.
	ErrUnsupportedAlgorithm = errors.New("signer: unsupported algorithm")
	// ErrPKCS12Password reports a PKCS#12 file the password does not open; the message never holds it.
	ErrPKCS12Password = errors.New("signer: wrong PKCS#12 password")
	// ErrEncryptedKey reports an encrypted PEM private key, which FromPEM does not decrypt.
	ErrEncryptedKey = errors.New("signer: encrypted PEM private key")
)

const minRSABits = 2048 // Maskinporten's smallest RSA modulus

// CheckKey reports whether pub can sign Maskinporten grants: an RSA key of at
// least 2048 bits (ErrKeyTooSmall otherwise), or an ECDSA key on P-256 or
// P-384. Any other key gives ErrUnsupportedKey.
func CheckKey(pub crypto.PublicKey) error {
	if _, err := defaultMethod(pub); err != nil {
		return err
	}
	if k, ok := pub.(*rsa.PublicKey); ok && k.N.BitLen() < minRSABits {
		return fmt.Errorf("%w: RSA key has %d bits; Maskinporten requires %d or more", ErrKeyTooSmall, k.N.BitLen(), minRSABits)
	}
	return nil
}

// defaultMethod returns the method a key signs with unless told otherwise:
// RS256 for RSA, ES256 for P-256, ES384 for P-384; else ErrUnsupportedKey.
func defaultMethod(pub crypto.PublicKey) (*SigningMethod, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k != nil && k.N != nil {
			return RS256, nil
		}
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			break
		}
		switch k.Curve.Params().Name {
		case "P-256":
			return ES256, nil
		case "P-384":
			return ES384, nil
		}
	}
	return nil, fmt.Errorf("%w: %s; use RSA (2048 bits or more) or ECDSA P-256/P-384", ErrUnsupportedKey, keyDescription(pub))
}

// MatchCertificate returns nil when cert certifies pub, else an error
// wrapping ErrCertificateMismatch naming the certificate's subject and serial.
func MatchCertificate(pub crypto.PublicKey, cert *x509.Certificate) error {
	if cert == nil {
		return fmt.Errorf("%w: no certificate", ErrCertificateMismatch)
	}
	if k, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(cert.PublicKey) {
		return fmt.Errorf("%w: certificate %q (serial %X) holds a %s, the key is a %s",
			ErrCertificateMismatch, cert.Subject.String(), cert.SerialNumber, keyDescription(cert.PublicKey), keyDescription(pub))
	}
	return nil
}

// keyDescription names a public key for error messages, e.g. "RSA 2048 key".
func keyDescription(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return "empty RSA key"
		}
		return fmt.Sprintf("RSA %d key", k.N.BitLen())
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return "empty ECDSA key"
		}
		return fmt.Sprintf("ECDSA %s key", k.Curve.Params().Name)
	case nil:
		return "nil key"
	default:
		return fmt.Sprintf("%T key", pub)
	}
}
