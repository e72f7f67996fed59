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

// String returns "RSA", "EC" or "other".
func (k KeyType) String() string {
	switch k {
	case KeyTypeRSA:
		return "RSA"
	case KeyTypeEC:
		return "EC"
	}
	return "other"
}

// Certificate is an X.509 certificate object on a token.
type Certificate struct {
	ID    []byte // CKA_ID
	Label string // CKA_LABEL
	Cert  *x509.Certificate
}

// KeyInfo describes a private key on a token.
type KeyInfo struct {
	ID                 []byte // CKA_ID
	Label              string // CKA_LABEL
	Type               KeyType
	Bits               int              // RSA modulus size or EC curve size; 0 when unknown
	CanSign            bool             // CKA_SIGN
	AlwaysAuthenticate bool             // CKA_ALWAYS_AUTHENTICATE: the PIN is needed before each signature
	Public             crypto.PublicKey // nil when the token shows no public half
	// Certificate is the token's certificate for this key (same public
	// key), or nil.
	Certificate *Certificate
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

// findObjects runs one search on the login session. t.mu must be held.
func (t *Token) findObjects(template []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := t.p.FindObjectsInit(t.loginSH, template); err != nil {
		return nil, wrap("C_FindObjectsInit", err)
	}
	var all []pkcs11.ObjectHandle
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

// attrs reads attributes; a missing attribute is left out of the map rather
// than failing the whole read. t.mu must be held.
func (t *Token) attrs(h pkcs11.ObjectHandle, types ...uint) map[uint][]byte {
	out := make(map[uint][]byte, len(types))
	tmpl := make([]*pkcs11.Attribute, len(types))
	for i, ty := range types {
		tmpl[i] = pkcs11.NewAttribute(ty, nil)
	}
	if got, err := t.p.GetAttributeValue(t.loginSH, h, tmpl); err == nil {
		for _, a := range got {
			out[a.Type] = a.Value
		}
		return out
	}
	// Some attribute is not there: read them one by one.
	for _, ty := range types {
		got, err := t.p.GetAttributeValue(t.loginSH, h, []*pkcs11.Attribute{pkcs11.NewAttribute(ty, nil)})
		if err == nil && len(got) == 1 {
			out[ty] = got[0].Value
		}
	}
	return out
}

func attrBool(v []byte) bool { return len(v) > 0 && v[0] != 0 }

func attrUint(v []byte) uint {
	var n uint
	// CK_ULONG in native (little-endian on the platforms we build for) order.
	for i := len(v) - 1; i >= 0; i-- {
		n = n<<8 | uint(v[i])
	}
	return n
}

// Certificates returns the X.509 certificates on the token. Certificates are
// public objects: no login is needed. Objects that do not parse as X.509 are
// skipped with a warning in the log.
func (t *Token) Certificates() ([]Certificate, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.certificates()
}

func (t *Token) certificates() ([]Certificate, error) {
	if t.closed {
		return nil, &Error{Op: "list certificates", Kind: ErrClosed}
	}
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

func (t *Token) keys() ([]keyObject, error) {
	if t.closed {
		return nil, &Error{Op: "list keys", Kind: ErrClosed}
	}
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

// publicKey reads a public key object. t.mu must be held.
func (t *Token) publicKey(h pkcs11.ObjectHandle, typ KeyType) crypto.PublicKey {
	switch typ {
	case KeyTypeRSA:
		a := t.attrs(h, pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT)
		e := new(big.Int).SetBytes(a[pkcs11.CKA_PUBLIC_EXPONENT])
		if len(a[pkcs11.CKA_MODULUS]) == 0 || !e.IsInt64() || e.Int64() < 2 || e.Int64() >= 1<<31 {
			return nil
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(a[pkcs11.CKA_MODULUS]), E: int(e.Int64())}
	case KeyTypeEC:
		a := t.attrs(h, pkcs11.CKA_EC_PARAMS, pkcs11.CKA_EC_POINT)
		pub, err := parseECPublic(a[pkcs11.CKA_EC_PARAMS], a[pkcs11.CKA_EC_POINT])
		if err != nil {
			return nil
		}
		return pub
	}
	return nil
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
	x := new(big.Int).SetBytes(raw[1 : 1+size])
	y := new(big.Int).SetBytes(raw[1+size:])
	pub := &ecdsa.PublicKey{Curve: curve, X: x, Y: y}
	if !curve.IsOnCurve(x, y) { //nolint:staticcheck // validating a point read from the token
		return nil, fmt.Errorf("EC point is not on %s", curve.Params().Name)
	}
	return pub, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// KeySelector chooses a private key. The zero KeySelector chooses the
// default key (see FindKey).
type KeySelector struct {
	ID    []byte // CKA_ID, exact
	Label string // CKA_LABEL, exact
}

// String describes the selection, as in "id 01, label \"x\"".
func (s KeySelector) String() string {
	var parts []string
	if len(s.ID) > 0 {
		parts = append(parts, "id "+hex.EncodeToString(s.ID))
	}
	if s.Label != "" {
		parts = append(parts, fmt.Sprintf("label %q", s.Label))
	}
	return strings.Join(parts, ", ")
}

// FindKey finds the private key to sign with, once; the Key keeps its handle
// for every later signature. It usually needs Login first.
//
// With an ID or label, the one private key that matches. With neither: the
// one signing key whose certificate is for authentication (keyUsage
// digitalSignature without nonRepudiation), as on a Buypass or Commfides
// card; failing that, the only private key that can sign. No match gives
// ErrKeyNotFound and several give ErrAmbiguousKey, both as a
// *SelectionError listing the keys.
func (t *Token) FindKey(sel KeySelector) (*Key, error) {
	t.mu.Lock()
	objs, err := t.keys()
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	all := make([]KeyInfo, len(objs))
	for i, o := range objs {
		all[i] = o.info
	}
	describe := func(ks []keyObject) []string {
		out := make([]string, len(ks))
		for i, k := range ks {
			out[i] = k.info.String()
		}
		return out
	}
	var matched []keyObject
	if len(sel.ID) > 0 || sel.Label != "" {
		for _, o := range objs {
			if (len(sel.ID) == 0 || bytes.Equal(sel.ID, o.info.ID)) && (sel.Label == "" || sel.Label == o.info.Label) {
				matched = append(matched, o)
			}
		}
		switch len(matched) {
		case 0:
			return nil, &SelectionError{Kind: ErrKeyNotFound, Wanted: sel.String(), Candidates: describe(objs), Keys: all}
		case 1:
			return t.newKey(matched[0])
		default:
			return nil, &SelectionError{Kind: ErrAmbiguousKey, Wanted: sel.String(), Candidates: describe(matched), Keys: all}
		}
	}
	var signers, auth []keyObject
	for _, o := range objs {
		if !o.info.CanSign {
			continue
		}
		signers = append(signers, o)
		if o.info.Authentication() {
			auth = append(auth, o)
		}
	}
	switch {
	case len(auth) == 1:
		return t.newKey(auth[0])
	case len(auth) > 1:
		return nil, &SelectionError{Kind: ErrAmbiguousKey, Candidates: describe(auth), Keys: all}
	case len(signers) == 1:
		return t.newKey(signers[0])
	case len(signers) > 1:
		return nil, &SelectionError{Kind: ErrAmbiguousKey, Candidates: describe(signers), Keys: all}
	}
	return nil, &SelectionError{Kind: ErrKeyNotFound, Candidates: describe(objs), Keys: all}
}
