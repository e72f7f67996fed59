//go:build cgo

package softhsm

import (
	"fmt"

	"github.com/miekg/pkcs11"
)

// Attributes reads attributes of the one object of class (such as
// pkcs11.CKO_PRIVATE_KEY) whose CKA_ID is id, logged in as the user, so
// that a test can check what code under test wrote: CKA_SENSITIVE,
// CKA_EXTRACTABLE and the like. It fails unless exactly one object
// matches. Values are as the module returns them (a CK_BBOOL is one byte).
func (tok *Token) Attributes(class uint, id []byte, types ...uint) (map[uint][]byte, error) {
	out := map[uint][]byte{}
	err := tok.session(true, func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		if err := ctx.FindObjectsInit(sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}); err != nil {
			return fmt.Errorf("C_FindObjectsInit: %w", err)
		}
		hs, _, err := ctx.FindObjects(sh, 2)
		if ferr := ctx.FindObjectsFinal(sh); err == nil {
			err = ferr
		}
		if err != nil {
			return fmt.Errorf("C_FindObjects: %w", err)
		}
		if len(hs) != 1 {
			return fmt.Errorf("%d objects of class %d with id %x, want 1", len(hs), class, id)
		}
		temp := make([]*pkcs11.Attribute, len(types))
		for i, ty := range types {
			temp[i] = pkcs11.NewAttribute(ty, nil)
		}
		got, err := ctx.GetAttributeValue(sh, hs[0], temp)
		if err != nil {
			return fmt.Errorf("C_GetAttributeValue: %w", err)
		}
		for _, a := range got {
			out[a.Type] = a.Value
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("softhsm: attributes on token %q: %w", tok.Label, err)
	}
	return out, nil
}
