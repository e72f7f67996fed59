package hsm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"

	"github.com/miekg/pkcs11"
)

// KeyType is the type of a private key.
type KeyType int

// Key types mp-hsm can sign with.
const (
	KeyTypeOther KeyType = iota
	KeyTypeRSA
	KeyTypeEC
)

var keyTypes = map[uint]KeyType{pkcs11.CKK_RSA: KeyTypeRSA, pkcs11.CKK_EC: KeyTypeEC}

// String returns "RSA", "EC" or "other".
func (k KeyType) String() string {
	if k == KeyTypeRSA || k == KeyTypeEC {
		return [...]string{KeyTypeRSA: "RSA", KeyTypeEC: "EC"}[k]
	}
	return "other"
}

// keyType maps CKA_KEY_TYPE to a KeyType.
func keyType(v []byte) KeyType { return keyTypes[attrUint(v)] }

// Certificate is an X.509 certificate object on a token.
type Certificate struct {
	ID    []byte // CKA_ID
	Label string // CKA_LABEL
	Cert  *x509.Certificate
}

// KeyInfo describes a private key on a token. It is a description only:
// changing a KeyInfo changes nothing on the token or in a Key.
type KeyInfo struct {
	ID                 []byte // CKA_ID
	Label              string // CKA_LABEL
	Type               KeyType
	Bits               int              // RSA modulus size or EC curve size; 0 when unknown
	CanSign            bool             // CKA_SIGN
	AlwaysAuthenticate bool             // CKA_ALWAYS_AUTHENTICATE: the PIN is needed before each signature
	Public             crypto.PublicKey // nil when the token shows no public half
	Certificate        *Certificate     // the token's certificate for this key (same public key), or nil
}

// clone returns a copy of k that shares no byte slice or Certificate with
// it; the public key and parsed certificate, never changed, are shared.
func (k KeyInfo) clone() KeyInfo {
	k.ID = bytes.Clone(k.ID)
	if k.Certificate != nil {
		c := *k.Certificate
		c.ID = bytes.Clone(c.ID)
		k.Certificate = &c
	}
	return k
}

// IDHex returns CKA_ID in lower-case hex, as --key-id takes it.
func (k KeyInfo) IDHex() string { return hex.EncodeToString(k.ID) }

// Authentication reports whether the key's certificate is for
// authentication: keyUsage digitalSignature without nonRepudiation, as the
// authentication key of a Buypass or Commfides card has.
func (k KeyInfo) Authentication() bool {
	if k.Certificate == nil {
		return false
	}
	u := k.Certificate.Cert.KeyUsage
	return u&x509.KeyUsageDigitalSignature != 0 && u&x509.KeyUsageContentCommitment == 0
}

// String describes the key for a person choosing one: id, label, type and
// size, and the certificate's subject.
func (k KeyInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "id %s label %q %s", k.IDHex(), k.Label, k.Type)
	if k.Bits > 0 {
		fmt.Fprintf(&b, " %d", k.Bits)
	}
	if !k.CanSign {
		b.WriteString(" (cannot sign)")
	}
	if k.AlwaysAuthenticate {
		b.WriteString(" (PIN before each signature)")
	}
	if k.Certificate != nil {
		fmt.Fprintf(&b, " cert %q", k.Certificate.Cert.Subject.CommonName)
		switch {
		case k.Authentication():
			b.WriteString(" [authentication]")
		case k.Certificate.Cert.KeyUsage&x509.KeyUsageContentCommitment != 0:
			b.WriteString(" [signing/nonRepudiation]")
		}
	}
	return b.String()
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

var ecCurves = []struct {
	oid   asn1.ObjectIdentifier
	curve elliptic.Curve
}{
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}, elliptic.P256()},
	{asn1.ObjectIdentifier{1, 3, 132, 0, 34}, elliptic.P384()},
	{asn1.ObjectIdentifier{1, 3, 132, 0, 35}, elliptic.P521()},
}

// ecPublic decodes CKA_EC_PARAMS (a named curve OID) and CKA_EC_POINT (an
// uncompressed point, DER OCTET STRING-wrapped or raw), or returns nil.
func ecPublic(params, point []byte) *ecdsa.PublicKey {
	var oid asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(params, &oid); err != nil {
		return nil
	}
	var raw []byte
	if _, err := asn1.Unmarshal(point, &raw); err != nil {
		raw = point
	}
	for _, c := range ecCurves {
		if oid.Equal(c.oid) {
			if pub, err := ecdsa.ParseUncompressedPublicKey(c.curve, raw); err == nil {
				return pub
			}
		}
	}
	return nil
}
