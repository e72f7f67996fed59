//go:build cgo

package softhsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// KeyOptions describes a key pair to generate on a token. The zero value
// is a sensitive, non-extractable signing key without a label, whose
// CKA_ID is KeyID of its public key.
type KeyOptions struct {
	// ID is the CKA_ID of both key objects. If empty, it is KeyID of the
	// generated public key, which is also the SubjectKeyId of a certificate
	// from CA.IssueLeaf for that key.
	ID []byte
	// Label is the CKA_LABEL of both key objects. If empty, the objects
	// have no label.
	Label string
	// AlwaysAuthenticate sets CKA_ALWAYS_AUTHENTICATE on the private key,
	// as on the signing (nonRepudiation) key of an enterprise card:
	// SoftHSM2 then wants C_Login(CKU_CONTEXT_SPECIFIC) before each
	// signature.
	AlwaysAuthenticate bool
	// NoSign sets CKA_SIGN false on the private key.
	NoSign bool
	// Extractable sets CKA_EXTRACTABLE on the private key. The key stays
	// CKA_SENSITIVE, so its value can still not be read in the clear.
	Extractable bool
}

// KeyID returns the identifier the Token methods give a key when
// KeyOptions.ID is empty: the SHA-1 hash of the DER subjectPublicKey bit
// string (RFC 5280 section 4.2.1.2, method 1). CA.IssueLeaf puts the same
// value in SubjectKeyId.
func KeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:], nil
}

// GenerateRSAKey generates an RSA key pair of the given size, public
// exponent 65537, on the token and returns its public key. Both objects
// are token objects; the private key is CKA_PRIVATE and CKA_SENSITIVE.
func (tok *Token) GenerateRSAKey(bits int, o KeyOptions) (*rsa.PublicKey, error) {
	if bits <= 0 {
		return nil, fmt.Errorf("softhsm: RSA key size %d", bits)
	}
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}
	pubT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
	}
	privT := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA)}
	pub, err := tok.generate(mech, pubT, privT, o, ReadRSAPublicKey)
	if err != nil {
		return nil, fmt.Errorf("softhsm: generate RSA %d key on token %q: %w", bits, tok.Label, err)
	}
	return pub.(*rsa.PublicKey), nil
}

// GenerateECKey generates an ECDSA key pair on curve (P-256, P-384 or
// P-521) on the token and returns its public key. The objects have the same
// attributes as with GenerateRSAKey.
func (tok *Token) GenerateECKey(curve elliptic.Curve, o KeyOptions) (*ecdsa.PublicKey, error) {
	oid, ok := curveOIDs[curve]
	if !ok {
		return nil, fmt.Errorf("softhsm: unsupported curve %v", curve)
	}
	params, err := asn1.Marshal(oid)
	if err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}
	pubT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
	}
	privT := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC)}
	read := func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) (crypto.PublicKey, error) {
		return ReadECPublicKey(ctx, sh, h, curve)
	}
	pub, err := tok.generate(mech, pubT, privT, o, read)
	if err != nil {
		return nil, fmt.Errorf("softhsm: generate EC %s key on token %q: %w", curve.Params().Name, tok.Label, err)
	}
	return pub.(*ecdsa.PublicKey), nil
}

// curveOIDs are the named curves GenerateECKey supports.
var curveOIDs = map[elliptic.Curve]asn1.ObjectIdentifier{
	elliptic.P256(): {1, 2, 840, 10045, 3, 1, 7},
	elliptic.P384(): {1, 3, 132, 0, 34},
	elliptic.P521(): {1, 3, 132, 0, 35},
}

// readPublic reads the public key of a public key object.
type readPublic func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) (crypto.PublicKey, error)

// generate generates a key pair with the attributes common to both key
// types added to pubT and privT, sets the default CKA_ID if o.ID is empty,
// and returns the public key.
func (tok *Token) generate(mech []*pkcs11.Mechanism, pubT, privT []*pkcs11.Attribute, o KeyOptions, read readPublic) (crypto.PublicKey, error) {
	pubT = append(pubT,
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
	)
	privT = append(privT,
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, o.Extractable),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, !o.NoSign),
		pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_AUTHENTICATE, o.AlwaysAuthenticate),
	)
	if len(o.ID) > 0 {
		pubT = append(pubT, pkcs11.NewAttribute(pkcs11.CKA_ID, o.ID))
		privT = append(privT, pkcs11.NewAttribute(pkcs11.CKA_ID, o.ID))
	}
	if o.Label != "" {
		pubT = append(pubT, pkcs11.NewAttribute(pkcs11.CKA_LABEL, o.Label))
		privT = append(privT, pkcs11.NewAttribute(pkcs11.CKA_LABEL, o.Label))
	}
	var pub crypto.PublicKey
	err := tok.session(true, func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		pubH, privH, err := ctx.GenerateKeyPair(sh, mech, pubT, privT)
		if err != nil {
			return fmt.Errorf("C_GenerateKeyPair: %w", err)
		}
		if pub, err = read(ctx, sh, pubH); err != nil {
			return err
		}
		if len(o.ID) > 0 {
			return nil
		}
		id, err := KeyID(pub)
		if err != nil {
			return err
		}
		for _, h := range []pkcs11.ObjectHandle{pubH, privH} {
			if err := ctx.SetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id)}); err != nil {
				return fmt.Errorf("C_SetAttributeValue(CKA_ID): %w", err)
			}
		}
		return nil
	})
	return pub, err
}

// PutCertificate writes cert to the token as an X.509 certificate object
// (CKO_CERTIFICATE, CKC_X_509) with CKA_VALUE, CKA_SUBJECT, CKA_ISSUER,
// CKA_SERIAL_NUMBER, CKA_ID and CKA_LABEL. It is a public token object, so
// it can be read without logging in. Give a certificate for a key the
// key's CKA_ID. If id is empty, cert.SubjectKeyId is used; if label is
// empty, the object has no label.
func (tok *Token) PutCertificate(cert *x509.Certificate, id []byte, label string) error {
	if cert == nil {
		return errors.New("softhsm: nil certificate")
	}
	if len(id) == 0 {
		id = cert.SubjectKeyId
	}
	tmpl, err := CertificateTemplate(cert, id, label)
	if err != nil {
		return fmt.Errorf("softhsm: %w", err)
	}
	category := 1 // token user
	if cert.IsCA {
		category = 2 // authority
	}
	tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_CERTIFICATE_CATEGORY, category))
	err = tok.session(false, func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		if _, err := ctx.CreateObject(sh, tmpl); err != nil {
			return fmt.Errorf("C_CreateObject: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("softhsm: write certificate %q to token %q: %w", cert.Subject.CommonName, tok.Label, err)
	}
	return nil
}

// session runs f in a new read-write session on the token, logged in as
// the user if login is set. If the process is already logged in to the
// token (code under test), f runs under that login and it is left in
// place; otherwise the session logs out before it closes.
func (tok *Token) session(login bool, f func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error) error {
	if tok.store == nil {
		return errors.New("the Token was not made by New or Store.InitToken")
	}
	mu.Lock()
	defer mu.Unlock()
	return tok.store.call(func(ctx *pkcs11.Ctx) error {
		slot, err := tok.slot(ctx)
		if err != nil {
			return err
		}
		return InSession(ctx, slot, tok.PIN, login, f)
	})
}

// slot returns the slot that holds the token now: SlotID, unless the module
// has been finalised and initialised again since, which renumbers the
// slots (see Token.SlotID).
func (tok *Token) slot(ctx *pkcs11.Ctx) (uint, error) {
	if info, err := ctx.GetTokenInfo(tok.SlotID); err == nil && info.SerialNumber == tok.Serial {
		return tok.SlotID, nil
	}
	return slotBySerial(ctx, tok.Serial)
}
