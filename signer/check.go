package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
)

// Errors for a key, certificate or algorithm that cannot be used, wrapped
// with details; test for them with errors.Is.
var (
	// ErrKeyTooSmall reports an RSA key shorter than Maskinporten's 2048 bits.
	ErrKeyTooSmall = errors.New("signer: key too small")
	// ErrCertificateMismatch reports a certificate for another public key.
	ErrCertificateMismatch = errors.New("signer: certificate does not match the key")
	// ErrUnsupportedKey reports a key that cannot sign a grant: only RSA and
	// ECDSA on P-256 or P-384 can.
	ErrUnsupportedKey = errors.New("signer: unsupported key")
	// ErrUnsupportedAlgorithm reports a JWS alg this package does not implement.
	ErrUnsupportedAlgorithm = errors.New("signer: unsupported algorithm")
)

const minRSABits = 2048 // Maskinporten's smallest RSA modulus

// CheckKey reports whether pub can sign Maskinporten grants: an RSA key of at
// least 2048 bits (ErrKeyTooSmall otherwise), or an ECDSA key on P-256 or
// P-384. Any other key gives ErrUnsupportedKey.
func CheckKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return fmt.Errorf("%w: empty RSA public key", ErrUnsupportedKey)
		}
		if bits := k.N.BitLen(); bits < minRSABits {
			return fmt.Errorf("%w: RSA key has %d bits; Maskinporten requires %d or more", ErrKeyTooSmall, bits, minRSABits)
		}
		return nil
	case *ecdsa.PublicKey:
		_, err := ecdsaSize(k)
		return err
	default:
		return fmt.Errorf("%w: %s; use RSA (2048 bits or more) or ECDSA P-256/P-384", ErrUnsupportedKey, keyDescription(pub))
	}
}

// MatchCertificate returns nil when cert certifies pub, else an error
// wrapping ErrCertificateMismatch naming the certificate's subject and serial.
func MatchCertificate(pub crypto.PublicKey, cert *x509.Certificate) error {
	if cert == nil {
		return fmt.Errorf("%w: no certificate", ErrCertificateMismatch)
	}
	if !publicKeyEqual(pub, cert.PublicKey) {
		return fmt.Errorf("%w: certificate %q (serial %X) holds a %s, the key is a %s",
			ErrCertificateMismatch, cert.Subject.String(), cert.SerialNumber, keyDescription(cert.PublicKey), keyDescription(pub))
	}
	return nil
}

// publicKeyEqual reports whether a and b are the same public key (every
// standard library public key has an Equal method).
func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// ecdsaSize returns the byte length of r and of s for k's curve, or
// ErrUnsupportedKey for curves other than P-256 and P-384.
func ecdsaSize(k *ecdsa.PublicKey) (int, error) {
	if k == nil || k.Curve == nil {
		return 0, fmt.Errorf("%w: empty ECDSA public key", ErrUnsupportedKey)
	}
	switch name := k.Curve.Params().Name; name {
	case "P-256":
		return 32, nil
	case "P-384":
		return 48, nil
	default:
		return 0, fmt.Errorf("%w: ECDSA curve %s; use P-256 or P-384", ErrUnsupportedKey, name)
	}
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
