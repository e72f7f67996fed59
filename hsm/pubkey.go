package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"
)

// keyType maps CKA_KEY_TYPE to a KeyType.
func keyType(v []byte) KeyType {
	switch attrUint(v) {
	case pkcs11.CKK_RSA:
		return KeyTypeRSA
	case pkcs11.CKK_EC:
		return KeyTypeEC
	}
	return KeyTypeOther
}

// rsaPublic builds an RSA public key from CKA_MODULUS and
// CKA_PUBLIC_EXPONENT, or returns nil when they do not make one.
func rsaPublic(modulus, exponent []byte) *rsa.PublicKey {
	e := new(big.Int).SetBytes(exponent)
	if len(modulus) == 0 || !e.IsInt64() || e.Int64() < 2 || e.Int64() >= 1<<31 {
		return nil
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(modulus), E: int(e.Int64())}
}

// publicKey reads a public key object of type typ. It returns nil, and no
// error, when the object's attributes do not make a key this package
// knows (a curve it does not support, or attributes the module says it
// does not have). t.mu must be held.
func (t *Token) publicKey(h objectHandle, typ KeyType) (crypto.PublicKey, error) {
	switch typ {
	case KeyTypeRSA:
		a, err := t.attrs(h, nil, []uint{pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT})
		if err != nil {
			return nil, err
		}
		if pub := rsaPublic(a[pkcs11.CKA_MODULUS], a[pkcs11.CKA_PUBLIC_EXPONENT]); pub != nil {
			return pub, nil
		}
	case KeyTypeEC:
		a, err := t.attrs(h, nil, []uint{pkcs11.CKA_EC_PARAMS, pkcs11.CKA_EC_POINT})
		if err != nil {
			return nil, err
		}
		if pub, err := parseECPublic(a[pkcs11.CKA_EC_PARAMS], a[pkcs11.CKA_EC_POINT]); err == nil {
			return pub, nil
		}
	}
	return nil, nil
}

var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidP521 = asn1.ObjectIdentifier{1, 3, 132, 0, 35}
)

// parseECPublic decodes CKA_EC_PARAMS (a named curve OID) and CKA_EC_POINT
// (an uncompressed point, DER OCTET STRING-wrapped or raw).
func parseECPublic(params, point []byte) (*ecdsa.PublicKey, error) {
	var oid asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(params, &oid); err != nil {
		return nil, fmt.Errorf("EC params: %w", err)
	}
	var curve elliptic.Curve
	switch {
	case oid.Equal(oidP256):
		curve = elliptic.P256()
	case oid.Equal(oidP384):
		curve = elliptic.P384()
	case oid.Equal(oidP521):
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("EC curve %v is not supported", oid)
	}
	var raw []byte
	if _, err := asn1.Unmarshal(point, &raw); err != nil {
		raw = point
	}
	size := (curve.Params().BitSize + 7) / 8
	if len(raw) != 1+2*size || raw[0] != 4 {
		return nil, fmt.Errorf("EC point is not an uncompressed point on %s", curve.Params().Name)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, raw)
	if err != nil {
		return nil, fmt.Errorf("EC point is not on %s", curve.Params().Name)
	}
	return pub, nil
}
