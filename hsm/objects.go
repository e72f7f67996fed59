package hsm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"math/big"

	"github.com/miekg/pkcs11"
)

// Certificates returns the X.509 certificates on the token. Certificates are
// public objects: no login is needed. Objects that do not parse as X.509 are
// skipped with a warning in the log.
func (t *Token) Certificates() ([]Certificate, error) {
	if err := t.enter("list certificates"); err != nil {
		return nil, err
	}
	defer t.leave()
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.certificates()
}

// certificates lists the certificates. t.mu must be held, inside the gates.
func (t *Token) certificates() ([]Certificate, error) {
	hs, err := t.findObjects([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		pkcs11.NewAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509),
	})
	if err != nil {
		return nil, err
	}
	certs := make([]Certificate, 0, len(hs))
	for _, h := range hs {
		a := t.attrs(h, pkcs11.CKA_ID, pkcs11.CKA_LABEL, pkcs11.CKA_VALUE)
		c, err := x509.ParseCertificate(a[pkcs11.CKA_VALUE])
		if err != nil {
			t.log.Warn("skipping a certificate object that does not parse", "label", string(a[pkcs11.CKA_LABEL]), "err", err)
			continue
		}
		certs = append(certs, Certificate{ID: a[pkcs11.CKA_ID], Label: string(a[pkcs11.CKA_LABEL]), Cert: c})
	}
	return certs, nil
}

// keyObject is a private key found on the token, with its handle.
type keyObject struct {
	info   KeyInfo
	handle pkcs11.ObjectHandle
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

// keys lists the private keys. t.mu must be held, inside the gates.
func (t *Token) keys() ([]keyObject, error) {
	hs, err := t.findObjects([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)})
	if err != nil {
		return nil, err
	}
	certs, err := t.certificates()
	if err != nil {
		return nil, err
	}
	pubs, err := t.findObjects([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY)})
	if err != nil {
		return nil, err
	}
	pubByID := map[string]pkcs11.ObjectHandle{}
	for _, h := range pubs {
		a := t.attrs(h, pkcs11.CKA_ID)
		pubByID[string(a[pkcs11.CKA_ID])] = h
	}

	out := make([]keyObject, 0, len(hs))
	for _, h := range hs {
		a := t.attrs(h, pkcs11.CKA_ID, pkcs11.CKA_LABEL, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_SIGN,
			pkcs11.CKA_ALWAYS_AUTHENTICATE, pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT, pkcs11.CKA_EC_PARAMS)
		k := KeyInfo{
			ID:                 a[pkcs11.CKA_ID],
			Label:              string(a[pkcs11.CKA_LABEL]),
			CanSign:            attrBool(a[pkcs11.CKA_SIGN]),
			AlwaysAuthenticate: attrBool(a[pkcs11.CKA_ALWAYS_AUTHENTICATE]),
		}
		switch attrUint(a[pkcs11.CKA_KEY_TYPE]) {
		case pkcs11.CKK_RSA:
			k.Type = KeyTypeRSA
			if mod := a[pkcs11.CKA_MODULUS]; len(mod) > 0 {
				e := new(big.Int).SetBytes(a[pkcs11.CKA_PUBLIC_EXPONENT])
				if e.IsInt64() && e.Int64() > 1 && e.Int64() < 1<<31 {
					k.Public = &rsa.PublicKey{N: new(big.Int).SetBytes(mod), E: int(e.Int64())}
				}
			}
		case pkcs11.CKK_EC:
			k.Type = KeyTypeEC
		}
		if k.Public == nil {
			if ph, ok := pubByID[string(k.ID)]; ok {
				k.Public = t.publicKey(ph, k.Type)
			}
		}
		// The certificate: same public key; failing that (no public half
		// visible), same CKA_ID.
		for i := range certs {
			c := &certs[i]
			if k.Public != nil && publicKeysEqual(k.Public, c.Cert.PublicKey) {
				k.Certificate = c
				break
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
		out = append(out, keyObject{info: k, handle: h})
	}
	return out, nil
}
