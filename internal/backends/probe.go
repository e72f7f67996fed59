//go:build cgo

package backends

import (
	"errors"
	"fmt"
	"slices"

	"github.com/miekg/pkcs11"
)

// HasMechanism reports whether r's token lists mech (a pkcs11.CKM_*
// value) in C_GetMechanismList.
func (r *Running) HasMechanism(mech uint) (bool, error) {
	r.p11.mu.Lock()
	defer r.p11.mu.Unlock()
	ctx, slot, err := r.module()
	if err != nil {
		return false, err
	}
	mechs, err := ctx.GetMechanismList(slot)
	if err != nil {
		return false, fmt.Errorf("%s: C_GetMechanismList(slot %d): %w", r.Name, slot, err)
	}
	return slices.ContainsFunc(mechs, func(m *pkcs11.Mechanism) bool { return m.Mechanism == mech }), nil
}

// PrivateKeyFlags are the protection attributes a token reports for a
// private key.
type PrivateKeyFlags struct {
	Sensitive, Extractable, AlwaysSensitive, NeverExtractable, AlwaysAuthenticate bool
}

// PrivateKeyFlags reads the protection attributes of the private key with
// CKA_ID id. It needs the user login, which it makes as GenerateKey does.
func (r *Running) PrivateKeyFlags(id []byte) (PrivateKeyFlags, error) {
	var f PrivateKeyFlags
	err := r.session(func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		if err := ctx.FindObjectsInit(sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}); err != nil {
			return fmt.Errorf("C_FindObjectsInit: %w", err)
		}
		hs, _, err := ctx.FindObjects(sh, 2)
		ferr := ctx.FindObjectsFinal(sh)
		if err = errors.Join(err, ferr); err != nil {
			return fmt.Errorf("C_FindObjects: %w", err)
		}
		if len(hs) != 1 {
			return fmt.Errorf("%d private keys with CKA_ID %x, want 1", len(hs), id)
		}
		for _, a := range []struct {
			typ uint
			dst *bool
		}{
			{pkcs11.CKA_SENSITIVE, &f.Sensitive}, {pkcs11.CKA_EXTRACTABLE, &f.Extractable},
			{pkcs11.CKA_ALWAYS_SENSITIVE, &f.AlwaysSensitive}, {pkcs11.CKA_NEVER_EXTRACTABLE, &f.NeverExtractable},
			{pkcs11.CKA_ALWAYS_AUTHENTICATE, &f.AlwaysAuthenticate},
		} {
			// One attribute per call: a module that lacks one fails the
			// call, and the others are still read.
			attrs, err := ctx.GetAttributeValue(sh, hs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(a.typ, nil)})
			if err == nil && len(attrs) == 1 && len(attrs[0].Value) == 1 {
				*a.dst = attrs[0].Value[0] != 0
			}
		}
		return nil
	})
	if err != nil {
		return f, fmt.Errorf("%s: private key %x: %w", r.Name, id, err)
	}
	return f, nil
}
