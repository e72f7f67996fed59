package hsm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/pkcs11"
)

// The attributes read per object, and those it may lack or keep secret
// (CKA_ALWAYS_AUTHENTICATE is PKCS#11 2.20; some cards hide the exponent).
var (
	certAttrs       = []uint{pkcs11.CKA_ID, pkcs11.CKA_LABEL, pkcs11.CKA_VALUE}
	pubAttrs        = []uint{pkcs11.CKA_ID, pkcs11.CKA_KEY_TYPE}
	privAttrs       = []uint{pkcs11.CKA_ID, pkcs11.CKA_LABEL, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_SIGN}
	privAttrsOption = []uint{pkcs11.CKA_ALWAYS_AUTHENTICATE, pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT}
)

// Certificates returns the X.509 certificates on the token (no login needed),
// skipping with a logged warning objects that do not parse. They are read once
// per Token and again after a Login, which may show more; the parsed
// certificates are shared, the slice and IDs are the caller's.
func (t *Token) Certificates() (out []Certificate, err error) {
	err = t.locked("list certificates", false, func() error {
		certs, err := t.certificates()
		for _, c := range certs {
			c.ID = bytes.Clone(c.ID)
			out = append(out, c)
		}
		return err
	})
	return out, err
}

// certificates returns t.certs, reading them first if need be. t.mu must be
// held, inside the gates. The result must not be changed.
func (t *Token) certificates() ([]Certificate, error) {
	if t.certs != nil {
		return t.certs, nil
	}
	hs, err := t.findObjects(newAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		newAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509))
	if err != nil {
		return nil, err
	}
	certs := make([]Certificate, 0, len(hs))
	for _, h := range hs {
		a, err := t.attrs(h, certAttrs, nil)
		if err != nil {
			return nil, err
		}
		c, err := x509.ParseCertificate(a[pkcs11.CKA_VALUE])
		if err != nil {
			t.log.Warn("skipping a certificate object that does not parse", "label", string(a[pkcs11.CKA_LABEL]), "err", err)
			continue
		}
		certs = append(certs, Certificate{ID: a[pkcs11.CKA_ID], Label: string(a[pkcs11.CKA_LABEL]), Cert: c})
	}
	t.certs = certs
	return certs, nil
}

// keyObject is a private key found on the token, with its handle.
type keyObject struct {
	info   KeyInfo
	handle objectHandle
}

// Keys returns the private keys the session can see, each with its public
// key and certificate when the token has them. Most tokens show private
// keys only after Login.
func (t *Token) Keys() ([]KeyInfo, error) {
	objs, err := t.lockedKeys("list keys")
	if err != nil {
		return nil, err
	}
	return infos(objs), nil
}

func (t *Token) lockedKeys(op string) (objs []keyObject, err error) {
	err = t.locked(op, false, func() (err error) {
		objs, err = t.keys()
		return err
	})
	return objs, err
}

func infos(objs []keyObject) []KeyInfo {
	out := make([]KeyInfo, len(objs))
	for i, o := range objs {
		out[i] = o.info
	}
	return out
}

// keys lists the private keys, t.mu held inside the gates.
func (t *Token) keys() ([]keyObject, error) {
	hs, err := t.findObjects(newAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY))
	if err != nil {
		return nil, err
	}
	certs, err := t.certificates()
	if err != nil {
		return nil, err
	}
	out := make([]keyObject, len(hs))
	for i, h := range hs {
		a, err := t.attrs(h, privAttrs, privAttrsOption)
		if err != nil {
			return nil, err
		}
		out[i] = keyObject{handle: h, info: KeyInfo{
			ID:                 a[pkcs11.CKA_ID],
			Label:              string(a[pkcs11.CKA_LABEL]),
			Type:               keyType(a[pkcs11.CKA_KEY_TYPE]),
			CanSign:            attrBool(a[pkcs11.CKA_SIGN]),
			AlwaysAuthenticate: attrBool(a[pkcs11.CKA_ALWAYS_AUTHENTICATE]),
		}}
		if out[i].info.Type == KeyTypeRSA {
			if pub := rsaPublic(a[pkcs11.CKA_MODULUS], a[pkcs11.CKA_PUBLIC_EXPONENT]); pub != nil {
				out[i].info.Public = pub
			}
		}
	}
	if err := t.publicHalves(out); err != nil {
		return nil, err
	}
	for i := range out {
		k := &out[i].info
		// The certificate has the same public key or, with none visible, CKA_ID.
		for j, c := range certs {
			if pub, ok := k.Public.(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(c.Cert.PublicKey) ||
				k.Public == nil && len(k.ID) > 0 && bytes.Equal(c.ID, k.ID) {
				k.Certificate = &certs[j]
				if k.Public == nil {
					k.Public = c.Cert.PublicKey
				}
				break
			}
		}
		switch pub := k.Public.(type) {
		case *rsa.PublicKey:
			k.Bits = pub.N.BitLen()
		case *ecdsa.PublicKey:
			k.Bits = pub.Curve.Params().BitSize
		}
		*k = k.clone() // its own copy of the certificate
	}
	return out, nil
}

// publicHalves fills in a missing public key (an RSA key shows its modulus,
// an EC key does not) from the public key object of the same CKA_ID and
// type, skipping objects that make no key this package knows. It searches
// only when some key lacks one. t.mu must be held, inside the gates.
func (t *Token) publicHalves(keys []keyObject) error {
	if !slices.ContainsFunc(keys, func(k keyObject) bool { return k.info.Public == nil }) {
		return nil
	}
	pubs, err := t.findObjects(newAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY))
	if err != nil {
		return err
	}
	type pubObject struct {
		h   objectHandle
		typ KeyType
	}
	pubByID := map[string]pubObject{}
	for _, h := range pubs {
		a, err := t.attrs(h, pubAttrs, nil)
		if err != nil {
			return err
		}
		pubByID[string(a[pkcs11.CKA_ID])] = pubObject{h, keyType(a[pkcs11.CKA_KEY_TYPE])}
	}
	for i := range keys {
		k := &keys[i].info
		p, ok := pubByID[string(k.ID)]
		if !ok || k.Public != nil || p.typ != k.Type {
			continue
		}
		switch k.Type {
		case KeyTypeRSA:
			a, err := t.attrs(p.h, nil, []uint{pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT})
			if err != nil {
				return err
			}
			if pub := rsaPublic(a[pkcs11.CKA_MODULUS], a[pkcs11.CKA_PUBLIC_EXPONENT]); pub != nil {
				k.Public = pub
			}
		case KeyTypeEC:
			a, err := t.attrs(p.h, nil, []uint{pkcs11.CKA_EC_PARAMS, pkcs11.CKA_EC_POINT})
			if err != nil {
				return err
			}
			if pub := ecPublic(a[pkcs11.CKA_EC_PARAMS], a[pkcs11.CKA_EC_POINT]); pub != nil {
				k.Public = pub
			}
		}
	}
	return nil
}

// findObjects runs one search on the login session. t.mu must be held.
func (t *Token) findObjects(template ...*attribute) ([]objectHandle, error) {
	if err := t.p.FindObjectsInit(t.loginSH, template); err != nil {
		return nil, wrap("C_FindObjectsInit", err)
	}
	var all []objectHandle
	for {
		hs, _, err := t.p.FindObjects(t.loginSH, 64)
		if err != nil {
			_ = t.p.FindObjectsFinal(t.loginSH)
			return nil, wrap("C_FindObjects", err)
		}
		all = append(all, hs...)
		if len(hs) < 64 {
			break
		}
	}
	return all, wrap("C_FindObjectsFinal", t.p.FindObjectsFinal(t.loginSH))
}

// absentAttr reports that C_GetAttributeValue has no value to give.
func absentAttr(err error) bool {
	return errors.Is(err, ReturnValue(pkcs11.CKR_ATTRIBUTE_TYPE_INVALID)) ||
		errors.Is(err, ReturnValue(pkcs11.CKR_ATTRIBUTE_SENSITIVE))
}

// attrs reads the attributes required and optional of object h, in one call
// when the object has them all; t.mu held. When one is absent (PKCS#11 does
// not say which), it reads the required ones together and each optional one
// alone: a missing required one is an error naming it. Any other error (a
// card pulled out) is returned as it is.
func (t *Token) attrs(h objectHandle, required, optional []uint) (map[uint][]byte, error) {
	out := make(map[uint][]byte, len(required)+len(optional))
	switch err := t.readAttrs(h, append(append([]uint(nil), required...), optional...), out); {
	case err == nil:
		return out, nil
	case !absentAttr(err):
		return nil, err
	}
	if len(required) > 0 {
		if err := t.readAttrs(h, required, out); err != nil {
			if !absentAttr(err) {
				return nil, err
			}
			for _, ty := range required { // name the one that is missing
				if err := t.readAttrs(h, []uint{ty}, out); err != nil {
					if e := (*Error)(nil); errors.As(err, &e) && e.Detail == "" {
						e.Detail = "the object has no readable " + attrName(ty)
					}
					return nil, err
				}
			}
		}
	}
	for _, ty := range optional {
		if err := t.readAttrs(h, []uint{ty}, out); err != nil && !absentAttr(err) {
			return nil, err
		}
	}
	return out, nil
}

// readAttrs makes one C_GetAttributeValue call, storing the values in out.
func (t *Token) readAttrs(h objectHandle, types []uint, out map[uint][]byte) error {
	tmpl := make([]*attribute, len(types))
	names := make([]string, len(types))
	for i, ty := range types {
		tmpl[i], names[i] = newAttribute(ty, nil), attrName(ty)
	}
	got, err := t.p.GetAttributeValue(t.loginSH, h, tmpl)
	if err != nil {
		return wrap("C_GetAttributeValue("+strings.Join(names, ",")+")", err)
	}
	for _, a := range got {
		out[a.Type] = a.Value
	}
	return nil
}

var attrNames = map[uint]string{
	pkcs11.CKA_CLASS:               "CKA_CLASS",
	pkcs11.CKA_ID:                  "CKA_ID",
	pkcs11.CKA_LABEL:               "CKA_LABEL",
	pkcs11.CKA_VALUE:               "CKA_VALUE",
	pkcs11.CKA_KEY_TYPE:            "CKA_KEY_TYPE",
	pkcs11.CKA_SIGN:                "CKA_SIGN",
	pkcs11.CKA_ALWAYS_AUTHENTICATE: "CKA_ALWAYS_AUTHENTICATE",
	pkcs11.CKA_MODULUS:             "CKA_MODULUS",
	pkcs11.CKA_PUBLIC_EXPONENT:     "CKA_PUBLIC_EXPONENT",
	pkcs11.CKA_EC_PARAMS:           "CKA_EC_PARAMS",
	pkcs11.CKA_EC_POINT:            "CKA_EC_POINT",
}

// attrName names an attribute type for an error message.
func attrName(ty uint) string {
	if n, ok := attrNames[ty]; ok {
		return n
	}
	return fmt.Sprintf("attribute 0x%X", ty)
}

func attrBool(v []byte) bool { return len(v) > 0 && v[0] != 0 }

// attrUint reads a CK_ULONG, in native order (little-endian on the
// platforms we build for).
func attrUint(v []byte) uint {
	var n uint
	for i := len(v) - 1; i >= 0; i-- {
		n = n<<8 | uint(v[i])
	}
	return n
}
