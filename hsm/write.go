package hsm

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// ErrObjectExists: an object with the label or CKA_ID asked for is already
// on the token, so nothing was written. A usage problem, not a token fault:
// choose another label or id.
var ErrObjectExists = errors.New("an object with that label or id is already on the token")

// ErrReadOnly: the token was opened without TokenOptions.ReadWrite, so it
// cannot be written to.
var ErrReadOnly = errors.New("token opened read-only")

// KeySpec is a key type and size that GenerateKey can make.
type KeySpec struct {
	Type KeyType // KeyTypeRSA or KeyTypeEC
	Bits int     // RSA modulus size, or 256 for EC P-256
}

// KeySpecs are the specs GenerateKey accepts, by the name ParseKeySpec
// reads: those Maskinporten takes (RS256 on 2048 or 3072 bits, ES256).
var KeySpecs = map[string]KeySpec{
	"rsa:2048": {KeyTypeRSA, 2048},
	"rsa:3072": {KeyTypeRSA, 3072},
	"ec:p256":  {KeyTypeEC, 256},
}

// ParseKeySpec reads a key spec by name: rsa:2048, rsa:3072 or ec:p256.
// An empty name is rsa:2048.
func ParseKeySpec(name string) (KeySpec, error) {
	if name == "" {
		name = "rsa:2048"
	}
	s, ok := KeySpecs[strings.ToLower(name)]
	if !ok {
		return KeySpec{}, fmt.Errorf("key type %q: want rsa:2048, rsa:3072 or ec:p256", name)
	}
	return s, nil
}

// String returns the spec's name, as ParseKeySpec reads it.
func (s KeySpec) String() string {
	if s.Type == KeyTypeEC {
		return fmt.Sprintf("ec:p%d", s.Bits)
	}
	return fmt.Sprintf("rsa:%d", s.Bits)
}

// GenerateOptions describes the key pair GenerateKey makes.
type GenerateOptions struct {
	Label string  // CKA_LABEL of both halves; must not be empty
	ID    []byte  // CKA_ID of both halves; empty: 8 random bytes
	Spec  KeySpec // the key type; the zero value is rsa:2048
}

// p256Params is CKA_EC_PARAMS of a P-256 key: the DER of its OID.
var p256Params, _ = asn1.Marshal(ecCurves[0].oid)

// GenerateKey makes a key pair on the token, both halves with o.Label and
// o.ID, and returns its private half: sensitive, never extractable, can
// sign. The token must be open with TokenOptions.ReadWrite (else
// ErrReadOnly) and logged in (else tokenerr.ErrNotLoggedIn). An object with
// the label or id gives ErrObjectExists; that check is atomic only within
// the process, so across processes hold internal/changelock's token lock.
func (t *Token) GenerateKey(o GenerateOptions) (*Key, error) {
	const op = "generate key"
	if o.Label == "" {
		return nil, &Error{Op: op, Kind: tokenerr.ErrUnsupported, Detail: "a label is needed"}
	}
	if o.Spec == (KeySpec{}) {
		o.Spec = KeySpecs["rsa:2048"]
	}
	mech, mechName, typ := uint(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN), "CKM_RSA_PKCS_KEY_PAIR_GEN", uint(pkcs11.CKK_RSA)
	var pubT []*attribute
	switch o.Spec {
	case KeySpecs["rsa:2048"], KeySpecs["rsa:3072"]:
		pubT = []*attribute{
			newAttribute(pkcs11.CKA_MODULUS_BITS, o.Spec.Bits),
			newAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		}
	case KeySpecs["ec:p256"]:
		mech, mechName, typ = pkcs11.CKM_EC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN", pkcs11.CKK_EC
		pubT = []*attribute{newAttribute(pkcs11.CKA_EC_PARAMS, p256Params)}
	default:
		return nil, &Error{Op: op, Kind: tokenerr.ErrUnsupported, Detail: "key type " + o.Spec.String()}
	}
	id := o.ID
	if len(id) == 0 {
		id = make([]byte, 8)
		if _, err := rand.Read(id); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	common := []*attribute{
		newAttribute(pkcs11.CKA_KEY_TYPE, typ),
		newAttribute(pkcs11.CKA_TOKEN, true),
		newAttribute(pkcs11.CKA_ID, id),
		newAttribute(pkcs11.CKA_LABEL, o.Label),
	}
	pubT = append(append(pubT, common...),
		newAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		newAttribute(pkcs11.CKA_PRIVATE, false),
		newAttribute(pkcs11.CKA_VERIFY, true),
	)
	privT := append(slices.Clone(common),
		newAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		newAttribute(pkcs11.CKA_PRIVATE, true),
		newAttribute(pkcs11.CKA_SENSITIVE, true),
		newAttribute(pkcs11.CKA_EXTRACTABLE, false),
		newAttribute(pkcs11.CKA_SIGN, true),
	)

	var key *Key
	err := t.locked(op, true, func() error {
		if err := t.refuseTaken(op, o.Label, id); err != nil {
			return err
		}
		_, privH, err := t.p.GenerateKeyPair(t.loginSH, []*mechanism{newMechanism(mech, nil)}, pubT, privT)
		if err != nil {
			err = wrap("C_GenerateKeyPair", err)
			if e := (*Error)(nil); errors.As(err, &e) && e.Kind == tokenerr.ErrUnsupported {
				// The mechanism is the key pair generation, not a signature.
				e.Detail = "the token cannot generate " + o.Spec.String() + " keys (" +
					mechName + " is not among its mechanisms): choose another --type"
			}
			return err
		}
		objs, err := t.keys()
		for _, ko := range objs {
			if ko.handle == privH {
				key, err = t.newKey(ko)
				return err
			}
		}
		if err == nil {
			err = &Error{Op: op, Kind: tokenerr.ErrObjectGone, Detail: "the generated key is not among the token's keys"}
		}
		return err
	})
	return key, err
}

// CheckFree returns ErrObjectExists when an object on the token has label
// or id (either may be empty), so that a change of several steps can refuse
// a clash before its first step. Only a lock held across processes (mp-hsm
// takes internal/changelock's) keeps it true until GenerateKey.
func (t *Token) CheckFree(label string, id []byte) error {
	return t.locked("generate key", false, func() error { return t.refuseTaken("generate key", label, id) })
}

// refuseTaken is CheckFree with t.mu held.
func (t *Token) refuseTaken(op, label string, id []byte) error {
	for _, c := range []struct {
		set  bool
		attr *attribute
		what string
	}{{label != "", newAttribute(pkcs11.CKA_LABEL, label), fmt.Sprintf("label %q", label)},
		{len(id) > 0, newAttribute(pkcs11.CKA_ID, id), "id " + hex.EncodeToString(id)}} {
		if !c.set {
			continue
		}
		if hs, err := t.findObjects(c.attr); err != nil {
			return err
		} else if len(hs) > 0 {
			return &Error{Op: op, Kind: ErrObjectExists, Detail: fmt.Sprintf("%s is taken by %d object(s)", c.what, len(hs))}
		}
	}
	return nil
}

// certObjects finds the certificate objects whose value is cert; t.mu held.
func (t *Token) certObjects(cert *x509.Certificate) ([]objectHandle, error) {
	return t.findObjects(newAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE), newAttribute(pkcs11.CKA_VALUE, cert.Raw))
}

// WriteCertificate writes cert onto the token as a public X.509 certificate
// object with CKA_ID id (the key's, to sit beside it) and CKA_LABEL label.
// Like GenerateKey, it needs a read-write token that is logged in. When the
// same certificate is already there it returns ErrObjectExists.
func (t *Token) WriteCertificate(cert *x509.Certificate, id []byte, label string) error {
	const op = "write certificate"
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
	return t.locked(op, true, func() error {
		if hs, err := t.certObjects(cert); err != nil {
			return err
		} else if len(hs) > 0 {
			return &Error{Op: op, Kind: ErrObjectExists, Detail: "the certificate for " + cert.Subject.String() + " is already on the token"}
		}
		if _, err = t.p.CreateObject(t.loginSH, temp); err != nil {
			return wrap("C_CreateObject", err)
		}
		t.certs = nil // the certificates read before are no longer all of them
		return nil
	})
}

// DeleteCertificate removes every certificate object whose value is cert,
// and returns how many it removed; like WriteCertificate, it needs a
// read-write token that is logged in.
func (t *Token) DeleteCertificate(cert *x509.Certificate) (n int, err error) {
	err = t.locked("delete certificate", true, func() error {
		hs, err := t.certObjects(cert)
		t.certs = nil
		for _, h := range hs {
			if err := t.p.DestroyObject(t.loginSH, h); err != nil {
				return wrap("C_DestroyObject", err)
			}
			n++
		}
		return err
	})
	return n, err
}
