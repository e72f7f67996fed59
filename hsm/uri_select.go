package hsm

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/mp-hsm/mp-hsm/pkcs11uri"
)

// SelectorsFromURI returns the token and key selection the RFC 7512 URI u
// describes (see pkcs11uri.Parse). Every path attribute is used:
//
//   - token, serial, manufacturer, model and slot-id choose the token;
//   - slot-description and slot-manufacturer choose the slot (CK_SLOT_INFO);
//   - library-manufacturer, library-description and library-version must
//     match the module (C_GetInfo), or Module.FindSlot finds no token;
//   - id and object choose the key, and type says what kind of object the
//     URI names: private, public or cert all lead to the key pair.
//
// It refuses, with a *pkcs11uri.Error matching pkcs11uri.ErrInvalid: a type that
// cannot name a signing key (secret-key, data), and any vendor ("x-")
// attribute, since mp-hsm knows none and would otherwise ignore it. The
// query attributes are not selectors: ModuleFromURI resolves module-name
// and module-path, and the PIN attributes are for the caller.
func SelectorsFromURI(u *pkcs11uri.URI) (TokenSelector, KeySelector, error) {
	switch u.Type {
	case "", "private", "public", "cert":
	default:
		return TokenSelector{}, KeySelector{}, u.AttrError("type",
			"type="+u.Type+" cannot name a signing key; use type=private or leave type out")
	}
	if len(u.Vendor) > 0 {
		name := slices.Sorted(maps.Keys(u.Vendor))[0]
		return TokenSelector{}, KeySelector{}, u.AttrError(name, fmt.Sprintf(
			"mp-hsm knows no vendor attribute, and %s would be ignored; remove it", name))
	}
	ts := TokenSelector{
		Label: u.Token, Serial: u.Serial, Manufacturer: u.Manufacturer, Model: u.Model,
		SlotDescription: u.SlotDescription, SlotManufacturer: u.SlotManufacturer,
		LibraryManufacturer: u.LibraryManufacturer, LibraryDescription: u.LibraryDescription,
		LibraryVersion: u.LibraryVersion,
	}
	if u.SlotID != nil {
		id := *u.SlotID
		ts.SlotID = &id
	}
	return ts, KeySelector{ID: u.ID, Label: u.Object}, nil
}

// ModuleFromURI returns the path of the PKCS#11 module the URI u names:
// module-path as given, or the file module-name resolves to (see
// ResolveModuleName). It returns "" when the URI names no module; the
// caller then picks one (see FindDefaultModule).
//
// With both, module-path is used and module-name must name the same file:
// module-path's file name is NAME.so, or module-name resolves to that file.
// Otherwise the error matches pkcs11uri.ErrInvalid. A module-name that resolves to
// nothing gives an *Error matching tokenerr.ErrModuleNotFound.
func ModuleFromURI(u *pkcs11uri.URI) (string, error) {
	switch {
	case u.ModuleName == "":
		return u.ModulePath, nil
	case u.ModulePath == "":
		return ResolveModuleName(u.ModuleName)
	}
	base := u.ModulePath[strings.LastIndexByte(u.ModulePath, '/')+1:]
	if base == u.ModuleName || base == u.ModuleName+".so" {
		return u.ModulePath, nil
	}
	named, err := ResolveModuleName(u.ModuleName)
	if err == nil && sameFile(named, u.ModulePath) {
		return u.ModulePath, nil
	}
	what := "names no module here"
	if err == nil {
		what = "names " + named
	}
	return "", u.AttrError("module-name", fmt.Sprintf("module-name=%s %s, but module-path is %s; give one of them",
		u.ModuleName, what, u.ModulePath))
}

func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}
