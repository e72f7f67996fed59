package hsm

import (
	"github.com/miekg/pkcs11"
)

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
