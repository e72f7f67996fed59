package hsm

import (
	"crypto/x509"
	"encoding/asn1"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// WriteCertificate writes cert onto the token as a public token object
// (CKO_CERTIFICATE, CKC_X_509) with CKA_ID id and CKA_LABEL label, the
// subject, issuer and serial number PKCS#11 asks for, and the DER value.
// To sit beside a key, id must be the key's CKA_ID.
//
// Like GenerateKey, it needs a read-write token (ErrReadOnly) that is
// logged in (tokenerr.ErrNotLoggedIn). When the same certificate is already on the
// token it returns ErrObjectExists and writes nothing.
func (t *Token) WriteCertificate(cert *x509.Certificate, id []byte, label string) error {
	const op = "write certificate"
	w, err := t.enterWrite(op)
	if err != nil {
		return err
	}
	defer t.leave()
	t.mu.Lock()
	defer t.mu.Unlock()
	hs, err := t.findObjects([]*attribute{
		newAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		newAttribute(pkcs11.CKA_VALUE, cert.Raw),
	})
	if err != nil {
		return err
	}
	if len(hs) > 0 {
		return &Error{Op: op, Kind: ErrObjectExists, Detail: "the certificate for " + cert.Subject.String() + " is already on the token"}
	}
	serial, err := asn1.Marshal(cert.SerialNumber) // CKA_SERIAL_NUMBER is the DER INTEGER
	if err != nil {
		return &Error{Op: op, Kind: tokenerr.ErrUnsupported, Detail: err.Error()}
	}
	temp := []*attribute{
		newAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		newAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509),
		newAttribute(pkcs11.CKA_TOKEN, true),
		newAttribute(pkcs11.CKA_PRIVATE, false),
		newAttribute(pkcs11.CKA_SUBJECT, cert.RawSubject),
		newAttribute(pkcs11.CKA_ISSUER, cert.RawIssuer),
		newAttribute(pkcs11.CKA_SERIAL_NUMBER, serial),
		newAttribute(pkcs11.CKA_VALUE, cert.Raw),
	}
	if len(id) > 0 {
		temp = append(temp, newAttribute(pkcs11.CKA_ID, id))
	}
	if label != "" {
		temp = append(temp, newAttribute(pkcs11.CKA_LABEL, label))
	}
	if _, err = w.CreateObject(t.loginSH, temp); err != nil {
		return wrap("C_CreateObject", err)
	}
	t.certs = nil // the certificates read before are no longer all of them
	return nil
}

// DeleteCertificate removes every certificate object on the token whose
// value is cert, and returns how many it removed. It needs a read-write
// token that is logged in, as WriteCertificate does.
func (t *Token) DeleteCertificate(cert *x509.Certificate) (int, error) {
	const op = "delete certificate"
	w, err := t.enterWrite(op)
	if err != nil {
		return 0, err
	}
	defer t.leave()
	t.mu.Lock()
	defer t.mu.Unlock()
	hs, err := t.findObjects([]*attribute{
		newAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		newAttribute(pkcs11.CKA_VALUE, cert.Raw),
	})
	if err != nil {
		return 0, err
	}
	t.certs = nil
	for i, h := range hs {
		if err := w.DestroyObject(t.loginSH, h); err != nil {
			return i, wrap("C_DestroyObject", err)
		}
	}
	return len(hs), nil
}
