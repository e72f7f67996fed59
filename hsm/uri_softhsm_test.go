//go:build cgo

package hsm_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// TestSelectionBySlotAndLibrary: slot-description, slot-manufacturer and
// the library-* attributes select against C_GetSlotInfo and C_GetInfo.
func TestSelectionBySlotAndLibrary(t *testing.T) {
	tok := softhsm.New(t)
	m, err := hsm.Open(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	slots, err := m.Slots()
	if err != nil {
		t.Fatal(err)
	}
	var slot hsm.Slot
	for _, s := range slots {
		if s.ID == tok.SlotID {
			slot = s
		}
	}
	if slot.Description == "" || slot.Manufacturer == "" {
		t.Fatalf("slot %d has no description or manufacturer: %+v", tok.SlotID, slot)
	}
	major, minor, _ := strings.Cut(info.Version, ".")
	for _, tc := range []struct {
		name string
		u    pkcs11uri.URI
		want error // nil: finds tok
	}{
		{"slot-description", pkcs11uri.URI{SlotDescription: slot.Description}, nil},
		{"slot-manufacturer and token", pkcs11uri.URI{Token: tok.Label, SlotManufacturer: slot.Manufacturer}, nil},
		{"another slot-description", pkcs11uri.URI{Token: tok.Label, SlotDescription: "no such slot"}, tokenerr.ErrTokenNotFound},
		{"the module's library attributes", pkcs11uri.URI{Token: tok.Label, LibraryManufacturer: info.Manufacturer,
			LibraryDescription: info.Description, LibraryVersion: info.Version}, nil},
		{"another library-description", pkcs11uri.URI{Token: tok.Label, LibraryDescription: "Another PKCS #11 library"}, tokenerr.ErrTokenNotFound},
		{"another library-manufacturer", pkcs11uri.URI{Token: tok.Label, LibraryManufacturer: "Snake Oil, Inc."}, tokenerr.ErrTokenNotFound},
		{"another library-version", pkcs11uri.URI{Token: tok.Label, LibraryVersion: "255.255"}, tokenerr.ErrTokenNotFound},
		{"library-version M is M.0", pkcs11uri.URI{Token: tok.Label, LibraryVersion: major},
			map[bool]error{true: nil, false: tokenerr.ErrTokenNotFound}[minor == "0"]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := pkcs11uri.Parse(tc.u.String())
			if err != nil {
				t.Fatal(err)
			}
			ts, _, err := hsm.SelectorsFromURI(u)
			if err != nil {
				t.Fatal(err)
			}
			s, err := m.FindSlot(ts)
			if tc.want == nil {
				if err != nil || s.ID != tok.SlotID {
					t.Fatalf("FindSlot(%s) = %v, %v; want slot %d", u, s, err, tok.SlotID)
				}
				return
			}
			var se *hsm.SelectionError
			if !errors.Is(err, tc.want) || !errors.As(err, &se) {
				t.Fatalf("FindSlot(%s) = %v, %v; want %v", u, s, err, tc.want)
			}
			if strings.HasPrefix(tc.name, "another library") && !strings.Contains(err.Error(), info.Description) {
				t.Errorf("error %q should say what the module is", err)
			}
		})
	}
}

// TestModuleNameOpensTheModule: a URI with module-name=softhsm2 (p11-kit's
// config for SoftHSM2) leads to the token.
func TestModuleNameOpensTheModule(t *testing.T) {
	tok := softhsm.New(t)
	u, err := pkcs11uri.Parse((&pkcs11uri.URI{Token: tok.Label, ModuleName: "softhsm2"}).String())
	if err != nil {
		t.Fatal(err)
	}
	path, err := hsm.ModuleFromURI(u)
	if errors.Is(err, tokenerr.ErrModuleNotFound) && os.Getenv("CI") == "" {
		t.Skipf("no p11-kit config for SoftHSM2: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	m, err := hsm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ts, _, err := hsm.SelectorsFromURI(u)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := m.FindSlot(ts); err != nil || s.ID != tok.SlotID {
		t.Fatalf("FindSlot through module-name=softhsm2 (%s) = %v, %v", path, s, err)
	}
}
