package hsm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"

	"github.com/miekg/pkcs11"
)

// The attributes read per object: those every object of the class has, and
// those it may lack or keep secret (CKA_ALWAYS_AUTHENTICATE is PKCS#11 2.20;
// an EC key has no modulus; some cards hide the public exponent).
var (
	certAttrs       = []uint{pkcs11.CKA_ID, pkcs11.CKA_LABEL, pkcs11.CKA_VALUE}
	pubAttrs        = []uint{pkcs11.CKA_ID, pkcs11.CKA_KEY_TYPE}
	privAttrs       = []uint{pkcs11.CKA_ID, pkcs11.CKA_LABEL, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_SIGN}
	privAttrsOption = []uint{pkcs11.CKA_ALWAYS_AUTHENTICATE, pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT}
)

// Certificates returns the X.509 certificates on the token. Certificates are
// public objects: no login is needed. Objects that do not parse as X.509 are
// skipped with a warning in the log; a failure to read them (a card pulled
// out: tokenerr.ErrTokenRemoved) is returned.
//
// The certificates are read once per Token (FindKey reads them too) and
// kept; a Login reads them again at the next call, since a token may show
// more objects after it. A certificate written to the token later is seen
// by a Token opened later. The caller may change the returned slice and
// the Certificates' IDs; the parsed certificates are shared.
func (t *Token) Certificates() ([]Certificate, error) {
	if err := t.enter("list certificates"); err != nil {
		return nil, err
	}
	defer t.leave()
	t.mu.Lock()
	defer t.mu.Unlock()
	certs, err := t.certificates()
	if err != nil {
		return nil, err
	}
	out := make([]Certificate, len(certs))
	for i, c := range certs {
		c.ID = bytes.Clone(c.ID)
		out[i] = c
	}
	return out, nil
}

// certificates returns the certificates, read once and kept in t.certs.
// t.mu must be held, inside the gates. The result must not be changed.
func (t *Token) certificates() ([]Certificate, error) {
	if t.certs != nil {
		return t.certs, nil
	}
	hs, err := t.findObjects([]*attribute{
		newAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		newAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509),
	})
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
	if err := t.enter("list keys"); err != nil {
		return nil, err
	}
	defer t.leave()
	t.mu.Lock()
	defer t.mu.Unlock()
	objs, err := t.keys()
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, len(objs))
	for i, o := range objs {
		out[i] = o.info
	}
	return out, nil
}

// keys lists the private keys. t.mu must be held, inside the gates. Each
// object's attributes are read in one C_GetAttributeValue call when the
// module allows (see attrs); the certificates are read once per Token, and
// public key objects are searched only for a private key that does not
// show its public half itself (an RSA key shows its modulus).
func (t *Token) keys() ([]keyObject, error) {
	hs, err := t.findObjects([]*attribute{newAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)})
	if err != nil {
		return nil, err
	}
	certs, err := t.certificates()
	if err != nil {
		return nil, err
	}
	out := make([]keyObject, 0, len(hs))
	for _, h := range hs {
		a, err := t.attrs(h, privAttrs, privAttrsOption)
		if err != nil {
			return nil, err
		}
		k := KeyInfo{
			ID:                 a[pkcs11.CKA_ID],
			Label:              string(a[pkcs11.CKA_LABEL]),
			Type:               keyType(a[pkcs11.CKA_KEY_TYPE]),
			CanSign:            attrBool(a[pkcs11.CKA_SIGN]),
			AlwaysAuthenticate: attrBool(a[pkcs11.CKA_ALWAYS_AUTHENTICATE]),
		}
		if k.Type == KeyTypeRSA {
			if pub := rsaPublic(a[pkcs11.CKA_MODULUS], a[pkcs11.CKA_PUBLIC_EXPONENT]); pub != nil {
				k.Public = pub
			}
		}
		out = append(out, keyObject{info: k, handle: h})
	}
	if err := t.publicHalves(out); err != nil {
		return nil, err
	}
	for i := range out {
		k := &out[i].info
		// The certificate: same public key (every public key type of the
		// standard library has an Equal method); failing that (no public
		// half visible), same CKA_ID.
		if pub, ok := k.Public.(interface{ Equal(crypto.PublicKey) bool }); ok {
			for i := range certs {
				if pub.Equal(certs[i].Cert.PublicKey) {
					k.Certificate = &certs[i]
					break
				}
			}
		}
		if k.Public == nil {
			for i := range certs {
				if len(k.ID) > 0 && bytes.Equal(certs[i].ID, k.ID) {
					k.Certificate = &certs[i]
					k.Public = certs[i].Cert.PublicKey
					break
				}
			}
		}
		switch pub := k.Public.(type) {
		case *rsa.PublicKey:
			k.Bits = pub.N.BitLen()
		case *ecdsa.PublicKey:
			k.Bits = pub.Curve.Params().BitSize
		}
		// KeyInfo hands out its own copy of the certificate (clone).
		*k = k.clone()
	}
	return out, nil
}

// publicHalves fills in the public key of each key in keys that lacks one
// from the public key object with the same CKA_ID and type. It searches
// the public key objects only when some key lacks its public half. t.mu
// must be held, inside the gates.
func (t *Token) publicHalves(keys []keyObject) error {
	need := false
	for _, k := range keys {
		need = need || k.info.Public == nil
	}
	if !need {
		return nil
	}
	pubs, err := t.findObjects([]*attribute{newAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY)})
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
		if p, ok := pubByID[string(k.ID)]; ok && k.Public == nil && p.typ == k.Type {
			if k.Public, err = t.publicKey(p.h, k.Type); err != nil {
				return err
			}
		}
	}
	return nil
}
