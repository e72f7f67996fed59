//go:build cgo

package hsm

import (
	"crypto/elliptic"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// attrDouble sits in front of a real SoftHSM2 module. It counts
// C_GetAttributeValue calls, can fail every call from the failFrom-th on
// with failWith (a card pulled out during a listing), and can answer
// absent[type] for every template that asks for type, as a module that
// lacks the attribute or keeps it secret does (on private keys only, when
// privateOnly is set).
type attrDouble struct {
	p11
	mu          sync.Mutex
	calls       int
	failFrom    int // 0: never
	failWith    pkcs11.Error
	absent      map[uint]pkcs11.Error
	privateOnly bool
}

func (d *attrDouble) GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error) {
	d.mu.Lock()
	d.calls++
	n := d.calls
	d.mu.Unlock()
	if d.failFrom > 0 && n >= d.failFrom {
		return nil, d.failWith
	}
	if d.privateOnly {
		cl, err := d.p11.GetAttributeValue(sh, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil)})
		if err != nil || attrUint(cl[0].Value) != pkcs11.CKO_PRIVATE_KEY {
			return d.p11.GetAttributeValue(sh, o, a)
		}
	}
	for _, at := range a {
		if rv, ok := d.absent[at.Type]; ok {
			// Only where the real object has the attribute at all: the
			// double hides, it does not invent.
			if _, err := d.p11.GetAttributeValue(sh, o, []*pkcs11.Attribute{pkcs11.NewAttribute(at.Type, nil)}); err == nil {
				return nil, rv
			}
		}
	}
	return d.p11.GetAttributeValue(sh, o, a)
}

func (d *attrDouble) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls
}

// openAttrDouble opens st's token, logged in, behind an attrDouble.
func openAttrDouble(t *testing.T, st *softhsm.Token) (*Token, *attrDouble) {
	t.Helper()
	m, err := Open(st.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	d := &attrDouble{p11: m.p}
	m.p = d
	tok, err := m.OpenSlot(Slot{ID: st.SlotID}, TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(StaticPIN([]byte(st.PIN)), LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	return tok, d
}

// rsaCard provisions two RSA keys with certificates, as on a card.
func rsaCard(t *testing.T) *softhsm.Token {
	t.Helper()
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{ID: []byte{1}, Label: "Authentication"}, softhsm.LeafOptions{})
	pub := st.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{2}, Label: "Signing", AlwaysAuthenticate: true})
	leaf, err := ca.IssueLeaf(pub, softhsm.LeafOptions{Usage: softhsm.Signing})
	if err != nil {
		t.Fatal(err)
	}
	st.WriteCertificate(t, leaf, []byte{2}, "Signing")
	return st
}

// TestCardRemovedMidListing pulls the card out at every attribute read of
// a key listing in turn, on a Token that has read nothing yet: each time
// the listing must fail with tokenerr.ErrTokenRemoved, never give keys with empty
// fields or skip certificates as unparseable.
func TestCardRemovedMidListing(t *testing.T) {
	st := rsaCard(t)
	tok, d := openAttrDouble(t, st)
	before := d.count()
	keys, err := tok.Keys()
	if err != nil || len(keys) != 2 {
		t.Fatalf("Keys() = %v, %v; want 2 keys", keys, err)
	}
	reads := d.count() - before
	for i := 1; i <= reads; i++ {
		for _, list := range []struct {
			name string
			f    func(*Token) error
		}{
			{"Keys", func(tok *Token) error { _, err := tok.Keys(); return err }},
			{"FindKey", func(tok *Token) error { _, err := tok.FindKey(KeySelector{}); return err }},
		} {
			tok, d := openAttrDouble(t, st)
			d.mu.Lock()
			d.failFrom, d.failWith = d.calls+i, pkcs11.CKR_DEVICE_REMOVED
			d.mu.Unlock()
			if err := list.f(tok); !errors.Is(err, tokenerr.ErrTokenRemoved) || !errors.Is(err, pkcs11.Error(pkcs11.CKR_DEVICE_REMOVED)) {
				t.Errorf("card removed at attribute read %d of %d: %s = %v; want tokenerr.ErrTokenRemoved", i, reads, list.name, err)
			}
		}
	}
	tok, d = openAttrDouble(t, st)
	d.mu.Lock()
	d.failFrom, d.failWith = d.calls+1, pkcs11.CKR_DEVICE_REMOVED
	d.mu.Unlock()
	if certs, err := tok.Certificates(); !errors.Is(err, tokenerr.ErrTokenRemoved) || certs != nil {
		t.Errorf("Certificates() with the card removed = %v, %v; want tokenerr.ErrTokenRemoved", certs, err)
	}
}

// TestOneAttributeReadPerObject counts C_GetAttributeValue calls for a key
// listing on a card with RSA keys: one per private key and certificate;
// none for the public key objects, since the private RSA keys show their
// modulus; and none when the certificates are read again.
func TestOneAttributeReadPerObject(t *testing.T) {
	st := rsaCard(t)
	tok, d := openAttrDouble(t, st)
	before := d.count()
	if _, err := tok.Keys(); err != nil {
		t.Fatal(err)
	}
	// 3 certificates (two leaves and their CA), 2 private keys.
	if n := d.count() - before; n != 5 {
		t.Errorf("Keys() made %d C_GetAttributeValue calls for 2 private keys and 3 certificates, want 5", n)
	}
	before = d.count()
	certs, err := tok.Certificates()
	if err != nil || len(certs) != 3 {
		t.Fatalf("Certificates() = %v, %v; want 3", certs, err)
	}
	if n := d.count() - before; n != 0 {
		t.Errorf("Certificates() after Keys() made %d C_GetAttributeValue calls, want 0 (read once per Token)", n)
	}
}

// TestAbsentAttributes: an attribute the module calls absent (type invalid
// or sensitive) is absent when optional, and an error naming it when
// required.
func TestAbsentAttributes(t *testing.T) {
	st := rsaCard(t)
	ecPub := st.GenerateEC(t, elliptic.P256(), softhsm.KeyOptions{ID: []byte{3}, Label: "ec"})

	t.Run("EC key on SoftHSM2: no modulus", func(t *testing.T) {
		tok, _ := openAttrDouble(t, st)
		keys, err := tok.Keys()
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(keys, func(k KeyInfo) bool { return k.Label == "ec" })
		if i < 0 || keys[i].Type != KeyTypeEC || keys[i].Bits != 256 || !ecPub.Equal(keys[i].Public) {
			t.Fatalf("Keys() = %v; want the P-256 key with its public key", keys)
		}
	})
	t.Run("public exponent sensitive", func(t *testing.T) {
		tok, d := openAttrDouble(t, st)
		// As some cards do on the private key: the public key then
		// comes from the public key object.
		d.absent = map[uint]pkcs11.Error{pkcs11.CKA_PUBLIC_EXPONENT: pkcs11.CKR_ATTRIBUTE_SENSITIVE}
		d.privateOnly = true
		keys, err := tok.Keys()
		if err != nil || len(keys) != 3 {
			t.Fatalf("Keys() = %v, %v; want 3 keys", keys, err)
		}
		for _, k := range keys {
			if k.Type == KeyTypeRSA && (k.Certificate == nil || k.Public == nil || k.Bits != 2048) {
				t.Errorf("key %v: want the public key and certificate despite a hidden exponent", k)
			}
		}
	})
	t.Run("public key objects without a modulus", func(t *testing.T) {
		tok, d := openAttrDouble(t, st)
		d.absent = map[uint]pkcs11.Error{pkcs11.CKA_MODULUS: pkcs11.CKR_ATTRIBUTE_TYPE_INVALID}
		// Neither the private nor the public objects show the modulus:
		// the public key comes from the certificate with the same CKA_ID.
		keys, err := tok.Keys()
		if err != nil || len(keys) != 3 {
			t.Fatalf("Keys() = %v, %v; want 3 keys", keys, err)
		}
		for _, k := range keys {
			if k.Type == KeyTypeRSA && (k.Certificate == nil || k.Public == nil || k.Bits != 2048) {
				t.Errorf("key %v: want the public key from the certificate", k)
			}
		}
	})
	t.Run("no CKA_ALWAYS_AUTHENTICATE (PKCS#11 2.11 module)", func(t *testing.T) {
		tok, d := openAttrDouble(t, st)
		d.absent = map[uint]pkcs11.Error{pkcs11.CKA_ALWAYS_AUTHENTICATE: pkcs11.CKR_ATTRIBUTE_TYPE_INVALID}
		keys, err := tok.Keys()
		if err != nil || len(keys) != 3 {
			t.Fatalf("Keys() = %v, %v; want 3 keys", keys, err)
		}
		for _, k := range keys {
			if k.AlwaysAuthenticate || k.Public == nil || k.ID == nil || k.Label == "" {
				t.Errorf("key %v: want AlwaysAuthenticate false and every other field read", k)
			}
		}
	})
	t.Run("required CKA_KEY_TYPE missing", func(t *testing.T) {
		tok, d := openAttrDouble(t, st)
		d.absent = map[uint]pkcs11.Error{pkcs11.CKA_KEY_TYPE: pkcs11.CKR_ATTRIBUTE_TYPE_INVALID}
		keys, err := tok.Keys()
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_TYPE_INVALID)) || !errors.Is(err, tokenerr.ErrModule) ||
			!strings.Contains(err.Error(), "CKA_KEY_TYPE") || keys != nil {
			t.Fatalf("Keys() = %v, %v; want an error naming CKA_KEY_TYPE", keys, err)
		}
	})
}

func TestRSAPublic(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mod, e  []byte
		wantNil bool
	}{
		{"65537", []byte{0xc3, 0x01}, []byte{1, 0, 1}, false},
		{"no modulus", nil, []byte{1, 0, 1}, true},
		{"exponent 1", []byte{0xc3}, []byte{1}, true},
		{"exponent too large", []byte{0xc3}, []byte{0x80, 0, 0, 0}, true},
	} {
		pub := rsaPublic(tc.mod, tc.e)
		if (pub == nil) != tc.wantNil {
			t.Errorf("%s: rsaPublic = %v", tc.name, pub)
		}
		if pub != nil && (pub.E != 65537 || pub.N.Cmp(big.NewInt(0xc301)) != 0) {
			t.Errorf("%s: rsaPublic = %v", tc.name, pub)
		}
	}
}
