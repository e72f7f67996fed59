package hsm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// findObjects runs one search on the login session. t.mu must be held.
func (t *Token) findObjects(template []*attribute) ([]objectHandle, error) {
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

// absentAttr reports the two return values with which C_GetAttributeValue
// says that an attribute has no value to give: the object has no such
// attribute (CKR_ATTRIBUTE_TYPE_INVALID), or will not reveal it
// (CKR_ATTRIBUTE_SENSITIVE).
func absentAttr(err error) bool {
	return errors.Is(err, ReturnValue(pkcs11.CKR_ATTRIBUTE_TYPE_INVALID)) ||
		errors.Is(err, ReturnValue(pkcs11.CKR_ATTRIBUTE_SENSITIVE))
}

// attrs reads the attributes required and optional of object h, in one
// C_GetAttributeValue call when the object has them all. t.mu must be held.
//
// When the module answers that some attribute is absent (type invalid or
// sensitive; PKCS#11 does not say which, and miekg/pkcs11 returns no values
// then), attrs reads the required attributes in one call and each optional
// one alone: an optional attribute the module calls absent is left out of
// the map, a required one is an error. Any other error, such as a card
// pulled out (tokenerr.ErrTokenRemoved), is returned as it is, never swallowed.
func (t *Token) attrs(h objectHandle, required, optional []uint) (map[uint][]byte, error) {
	out := make(map[uint][]byte, len(required)+len(optional))
	all := make([]uint, 0, len(required)+len(optional))
	all = append(append(all, required...), optional...)
	err := t.readAttrs(h, all, out)
	switch {
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
			// Name the attribute that is missing.
			for _, ty := range required {
				if err := t.readAttrs(h, []uint{ty}, out); err != nil {
					return nil, withDetail(err, fmt.Sprintf("the object has no readable %s", attrName(ty)))
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

// readAttrs makes one C_GetAttributeValue call for types and stores the
// values in out.
func (t *Token) readAttrs(h objectHandle, types []uint, out map[uint][]byte) error {
	tmpl := make([]*attribute, len(types))
	for i, ty := range types {
		tmpl[i] = newAttribute(ty, nil)
	}
	got, err := t.p.GetAttributeValue(t.loginSH, h, tmpl)
	if err != nil {
		names := make([]string, len(types))
		for i, ty := range types {
			names[i] = attrName(ty)
		}
		return wrap("C_GetAttributeValue("+strings.Join(names, ",")+")", err)
	}
	for _, a := range got {
		out[a.Type] = a.Value
	}
	return nil
}

// withDetail sets the Detail of the *Error err, when it is one.
func withDetail(err error, detail string) error {
	var e *Error
	if errors.As(err, &e) && e.Detail == "" {
		e.Detail = detail
	}
	return err
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

func attrUint(v []byte) uint {
	var n uint
	// CK_ULONG in native (little-endian on the platforms we build for) order.
	for i := len(v) - 1; i >= 0; i-- {
		n = n<<8 | uint(v[i])
	}
	return n
}
