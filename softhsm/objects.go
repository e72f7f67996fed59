//go:build cgo

package softhsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"
)

// The objects a test harness writes to and reads from any PKCS#11 token,
// SoftHSM2's or another (internal/backends): the same attributes whoever
// provisions.

// CertificateTemplate returns the attributes of a public X.509
// certificate object on the token (CKO_CERTIFICATE, CKC_X_509) holding
// cert, with CKA_VALUE, CKA_SUBJECT, CKA_ISSUER and CKA_SERIAL_NUMBER, and
// CKA_ID and CKA_LABEL when id and label are not empty, as a card issuer
// writes it.
func CertificateTemplate(cert *x509.Certificate, id []byte, label string) ([]*pkcs11.Attribute, error) {
	serial, err := asn1.Marshal(cert.SerialNumber)
	if err != nil {
		return nil, fmt.Errorf("certificate serial number: %w", err)
	}
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		pkcs11.NewAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, cert.Raw),
		pkcs11.NewAttribute(pkcs11.CKA_SUBJECT, cert.RawSubject),
		pkcs11.NewAttribute(pkcs11.CKA_ISSUER, cert.RawIssuer),
		pkcs11.NewAttribute(pkcs11.CKA_SERIAL_NUMBER, serial),
	}
	if len(id) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	if label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	return tmpl, nil
}

// ReadRSAPublicKey reads the RSA public key object h (CKA_MODULUS and
// CKA_PUBLIC_EXPONENT) in session sh.
func ReadRSAPublicKey(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) (crypto.PublicKey, error) {
	attrs, err := ctx.GetAttributeValue(sh, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("C_GetAttributeValue(CKA_MODULUS, CKA_PUBLIC_EXPONENT): %w", err)
	}
	e := new(big.Int).SetBytes(attrs[1].Value)
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
		return nil, fmt.Errorf("public exponent %v out of range", e)
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(attrs[0].Value), E: int(e.Int64())}, nil
}

// ReadECPublicKey reads the EC public key object h on curve in session
// sh. CKA_EC_POINT is a DER OCTET STRING holding the uncompressed point, as
// PKCS#11 says; the bare point, which some modules give, is accepted too.
func ReadECPublicKey(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle, curve elliptic.Curve) (crypto.PublicKey, error) {
	attrs, err := ctx.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, fmt.Errorf("C_GetAttributeValue(CKA_EC_POINT): %w", err)
	}
	point := attrs[0].Value
	var inner []byte
	if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
		point = inner
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, fmt.Errorf("CKA_EC_POINT: %w", err)
	}
	return pub, nil
}

// InSession runs f in a new read-write session on slot, logged in as the
// user with pin if login is set. A login already in place in the process
// (CKR_USER_ALREADY_LOGGED_IN: code under test logged in) is used and left
// in place; otherwise the session logs out when f returns, which logs out
// every session of the process on the token.
func InSession(ctx *pkcs11.Ctx, slot uint, pin string, login bool, f func(*pkcs11.Ctx, pkcs11.SessionHandle) error) error {
	sh, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("C_OpenSession(slot %d): %w", slot, err)
	}
	defer ctx.CloseSession(sh)
	if login {
		switch err := ctx.Login(sh, pkcs11.CKU_USER, pin); {
		case err == nil:
			defer ctx.Logout(sh)
		case errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)):
		default:
			return fmt.Errorf("C_Login(CKU_USER): %w", err)
		}
	}
	return f(ctx, sh)
}
