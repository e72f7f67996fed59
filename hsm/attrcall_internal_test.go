//go:build cgo

package hsm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/softhsm"
)

// TestGetAttributeValueOneCall: ctx.GetAttributeValue, which offers a
// buffer per attribute and calls C_GetAttributeValue once, reads the same
// values as miekg/pkcs11's two calls, for a certificate and a private key;
// with buffers too small for them (CKR_BUFFER_TOO_SMALL) it falls back to
// the two calls and still reads them; and a refusal comes back as the
// module gave it. (The call count itself is asserted end to end, through
// pkcs11-spy, by cmd/mp-hsm's TestE2ETokenCallCount.)
func TestGetAttributeValueOneCall(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{ID: []byte{7}, Label: "Authentication"}, softhsm.LeafOptions{})
	m, err := Open(st.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	c, ok := m.p.(*ctx)
	if !ok || c.list == nil {
		t.Fatalf("the module's function list was not found (%T): every read would take two calls", m.p)
	}
	tok, err := m.OpenSlot(Slot{ID: st.SlotID}, TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(StaticPIN([]byte(st.PIN)), LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	find := func(class uint) pkcs11.ObjectHandle {
		t.Helper()
		tok.mu.Lock()
		defer tok.mu.Unlock()
		hs, err := tok.findObjects(pkcs11.NewAttribute(pkcs11.CKA_CLASS, class))
		if err != nil || len(hs) == 0 {
			t.Fatalf("objects of class %d: %v, %v", class, hs, err)
		}
		return hs[0]
	}
	template := func(types []uint) []*pkcs11.Attribute {
		a := make([]*pkcs11.Attribute, len(types))
		for i, ty := range types {
			a[i] = pkcs11.NewAttribute(ty, nil)
		}
		return a
	}
	for _, obj := range []struct {
		name  string
		h     pkcs11.ObjectHandle
		types []uint
	}{
		{"certificate", find(pkcs11.CKO_CERTIFICATE), certAttrs},
		{"private key", find(pkcs11.CKO_PRIVATE_KEY), append(append([]uint(nil), privAttrs...), privAttrsOption...)},
	} {
		want, err := c.Ctx.GetAttributeValue(tok.loginSH, obj.h, template(obj.types))
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			size func(uint) int
		}{
			{"buffers that fit", nil},
			{"buffers too small", func(uint) int { return 1 }},
		} {
			c.attrBufSize = tc.size
			got, err := c.GetAttributeValue(tok.loginSH, obj.h, template(obj.types))
			if err != nil {
				t.Fatalf("%s, %s: %v", obj.name, tc.name, err)
			}
			if len(got) != len(want) {
				t.Fatalf("%s, %s: %d attributes, want %d", obj.name, tc.name, len(got), len(want))
			}
			for i := range want {
				if got[i].Type != want[i].Type || !bytes.Equal(got[i].Value, want[i].Value) {
					t.Errorf("%s, %s: %s = %x, want %x", obj.name, tc.name, attrName(want[i].Type), got[i].Value, want[i].Value)
				}
			}
			if len(want[len(want)-1].Value) == 0 {
				t.Fatalf("%s: the last attribute read empty; the comparison proves nothing", obj.name)
			}
		}
	}
	c.attrBufSize = nil
	_, err = c.GetAttributeValue(tok.loginSH, find(pkcs11.CKO_CERTIFICATE), template([]uint{pkcs11.CKA_ID, pkcs11.CKA_MODULUS}))
	if !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_TYPE_INVALID)) {
		t.Errorf("CKA_MODULUS of a certificate: %v, want CKR_ATTRIBUTE_TYPE_INVALID", err)
	}
}
