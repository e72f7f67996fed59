package hsm

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// TokenSelector chooses a token. Every field that is set must match; the
// zero TokenSelector chooses the only token present.
type TokenSelector struct {
	SlotID       *uint  // the slot ID as the module reports it
	Label        string // CKA token label, exact
	Serial       string // token serial number, exact
	Manufacturer string // token manufacturer ID, exact
	Model        string // token model, exact

	SlotDescription  string // the slot's description (CK_SLOT_INFO), exact
	SlotManufacturer string // the slot's manufacturer ID (CK_SLOT_INFO), exact

	// The library fields describe the module itself (C_GetInfo). When one
	// is set and the module does not match it, FindSlot finds no token.
	LibraryManufacturer string // the module's manufacturer ID, exact
	LibraryDescription  string // the module's library description, exact
	// LibraryVersion is the module's library version, "M.N" or "M"; as
	// p11-kit reads RFC 7512, "M" means M.0.
	LibraryVersion string
}

// IsZero reports whether the selector chooses nothing in particular.
func (s TokenSelector) IsZero() bool {
	return s == TokenSelector{}
}

// String describes the selection, as in "slot 0, label \"x\"".
func (s TokenSelector) String() string {
	var parts []string
	if s.SlotID != nil {
		parts = append(parts, "slot "+strconv.FormatUint(uint64(*s.SlotID), 10))
	}
	for _, f := range []struct{ name, v string }{
		{"label", s.Label}, {"serial", s.Serial}, {"manufacturer", s.Manufacturer}, {"model", s.Model},
		{"slot-description", s.SlotDescription}, {"slot-manufacturer", s.SlotManufacturer},
		{"library-manufacturer", s.LibraryManufacturer}, {"library-description", s.LibraryDescription},
		{"library-version", s.LibraryVersion},
	} {
		if f.v != "" {
			parts = append(parts, fmt.Sprintf("%s %q", f.name, f.v))
		}
	}
	return strings.Join(parts, ", ")
}

func (s TokenSelector) matches(slot Slot) bool {
	if s.SlotID != nil && *s.SlotID != slot.ID {
		return false
	}
	if s.SlotDescription != "" && s.SlotDescription != slot.Description ||
		s.SlotManufacturer != "" && s.SlotManufacturer != slot.Manufacturer {
		return false
	}
	t := slot.Token
	if t == nil {
		return false
	}
	return (s.Label == "" || s.Label == t.Label) &&
		(s.Serial == "" || s.Serial == t.Serial) &&
		(s.Manufacturer == "" || s.Manufacturer == t.Manufacturer) &&
		(s.Model == "" || s.Model == t.Model)
}

// checkLibrary compares the library fields of s with the module's
// C_GetInfo. It returns a *SelectionError (tokenerr.ErrTokenNotFound) that says what
// the module is when they differ. The caller is inside m.gate.
func (m *Module) checkLibrary(s TokenSelector) error {
	if s.LibraryManufacturer == "" && s.LibraryDescription == "" && s.LibraryVersion == "" {
		return nil
	}
	i, err := m.p.GetInfo()
	if err != nil {
		return wrap("C_GetInfo", err)
	}
	manuf, desc := trimPadded(i.ManufacturerID), trimPadded(i.LibraryDescription)
	ok := (s.LibraryManufacturer == "" || s.LibraryManufacturer == manuf) &&
		(s.LibraryDescription == "" || s.LibraryDescription == desc)
	if ok && s.LibraryVersion != "" {
		major, minor, valid := parseVersion(s.LibraryVersion)
		if !valid {
			return &SelectionError{Kind: tokenerr.ErrTokenNotFound, Wanted: s.String(),
				Candidates: []string{"library-version must be M or M.N, decimal numbers up to 255"}}
		}
		ok = major == i.LibraryVersion.Major && minor == i.LibraryVersion.Minor
	}
	if ok {
		return nil
	}
	return &SelectionError{Kind: tokenerr.ErrTokenNotFound, Wanted: s.String(), Candidates: []string{fmt.Sprintf(
		"module %s is library-manufacturer %q, library-description %q, library-version %d.%d",
		m.path, manuf, desc, i.LibraryVersion.Major, i.LibraryVersion.Minor)}}
}

// parseVersion reads "M" or "M.N" (decimal, each at most 255); "M" is M.0.
func parseVersion(v string) (major, minor byte, ok bool) {
	ms, ns, dot := strings.Cut(v, ".")
	a, err := strconv.ParseUint(ms, 10, 8)
	if err != nil {
		return 0, 0, false
	}
	var b uint64
	if dot {
		if b, err = strconv.ParseUint(ns, 10, 8); err != nil {
			return 0, 0, false
		}
	}
	return byte(a), byte(b), true
}

// trimPadded removes the blank (or NUL) padding of a PKCS#11 text field.
func trimPadded(s string) string { return strings.TrimRight(s, " \x00") }

// matching returns the slots whose initialised token matches sel.
func matching(sel TokenSelector, slots []Slot) []Slot {
	var out []Slot
	for _, s := range slots {
		if s.Token != nil && s.Token.Flags.Initialized() && sel.matches(s) {
			out = append(out, s)
		}
	}
	return out
}

// describeTokens lists tokens the way a person picks one: slot, label, serial.
func describeTokens(slots []Slot) []string {
	var out []string
	for _, s := range slots {
		if s.Token != nil {
			out = append(out, fmt.Sprintf("slot %d label %q serial %q", s.ID, s.Token.Label, s.Token.Serial))
		}
	}
	return out
}

// FindSlot returns the one slot whose token matches sel. It needs no login.
//
// With a slot ID that the module does not know, it returns tokenerr.ErrSlotNotFound;
// with a known slot that holds no token, tokenerr.ErrNoToken; when nothing matches
// (or the module does not match sel's library fields), tokenerr.ErrTokenNotFound
// listing the tokens present; when several match (or, for the zero
// selector, several tokens are present), tokenerr.ErrAmbiguousToken listing them.
// All are *SelectionError.
//
// Economy: when sel names no slot field, FindSlot reads only the tokens'
// information (C_GetTokenInfo per slot), and the returned Slot's own
// fields (Description, Manufacturer, Removable, Hardware) are left empty;
// Slots reads them. Only when no single token matches does it read the
// slots' information too, to explain the error.
func (m *Module) FindSlot(sel TokenSelector) (Slot, error) {
	s, err := m.findSlot(sel)
	return s, m.withLoadOutput(err)
}

func (m *Module) findSlot(sel TokenSelector) (Slot, error) {
	if err := m.enter("find slot"); err != nil {
		return Slot{}, err
	}
	defer m.gate.leave()
	if err := m.checkLibrary(sel); err != nil {
		return Slot{}, err
	}
	if sel.SlotDescription == "" && sel.SlotManufacturer == "" {
		if slots, err := m.tokenSlots(); err == nil {
			if matched := matching(sel, slots); len(matched) == 1 {
				return matched[0], nil
			}
		}
	}
	slots, err := m.slots()
	if err != nil {
		return Slot{}, err
	}
	var present, matched []Slot
	for _, s := range slots {
		if s.Token != nil && !s.Token.Flags.Initialized() {
			// An uninitialised token (SoftHSM2's free slot, a blank
			// card) holds no keys: never choose it.
			if sel.SlotID != nil && *sel.SlotID == s.ID {
				return Slot{}, &SelectionError{Kind: tokenerr.ErrNoToken, Wanted: sel.String(), Tokens: slots,
					Candidates: []string{fmt.Sprintf("the token in slot %d is not initialised", s.ID)}}
			}
			continue
		}
		if s.Token != nil {
			present = append(present, s)
			if sel.matches(s) {
				matched = append(matched, s)
			}
		}
	}
	if len(matched) == 1 {
		return matched[0], nil
	}
	if len(matched) > 1 {
		return Slot{}, &SelectionError{Kind: tokenerr.ErrAmbiguousToken, Wanted: sel.String(), Candidates: describeTokens(matched), Tokens: matched}
	}
	if sel.SlotID != nil {
		for _, s := range slots {
			if s.ID == *sel.SlotID && s.Token == nil {
				return Slot{}, &SelectionError{Kind: tokenerr.ErrNoToken, Wanted: sel.String(),
					Candidates: []string{"insert the card or token into slot " + strconv.FormatUint(uint64(s.ID), 10)}, Tokens: slots}
			}
		}
		known := false
		for _, s := range slots {
			known = known || s.ID == *sel.SlotID
		}
		if !known {
			var ids []string
			for _, s := range slots {
				ids = append(ids, s.String())
			}
			return Slot{}, &SelectionError{Kind: tokenerr.ErrSlotNotFound, Wanted: sel.String(), Candidates: ids, Tokens: slots}
		}
	}
	if len(present) == 0 {
		return Slot{}, &SelectionError{Kind: tokenerr.ErrNoToken, Wanted: sel.String(), Tokens: slots,
			Candidates: []string{"no slot holds a token; insert the card (is pcscd running?)"}}
	}
	return Slot{}, &SelectionError{Kind: tokenerr.ErrTokenNotFound, Wanted: sel.String(), Candidates: describeTokens(present), Tokens: present}
}
