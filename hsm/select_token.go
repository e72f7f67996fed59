package hsm

import (
	"fmt"
	"strconv"
	"strings"
)

// TokenSelector chooses a token. Every field that is set must match; the
// zero TokenSelector chooses the only token present.
type TokenSelector struct {
	SlotID       *uint  // the slot ID as the module reports it
	Label        string // CKA token label, exact
	Serial       string // token serial number, exact
	Manufacturer string // token manufacturer ID, exact
	Model        string // token model, exact
}

// IsZero reports whether the selector chooses nothing in particular.
func (s TokenSelector) IsZero() bool {
	return s.SlotID == nil && s.Label == "" && s.Serial == "" && s.Manufacturer == "" && s.Model == ""
}

// String describes the selection, as in "slot 0, label \"x\"".
func (s TokenSelector) String() string {
	var parts []string
	if s.SlotID != nil {
		parts = append(parts, "slot "+strconv.FormatUint(uint64(*s.SlotID), 10))
	}
	if s.Label != "" {
		parts = append(parts, fmt.Sprintf("label %q", s.Label))
	}
	if s.Serial != "" {
		parts = append(parts, fmt.Sprintf("serial %q", s.Serial))
	}
	if s.Manufacturer != "" {
		parts = append(parts, fmt.Sprintf("manufacturer %q", s.Manufacturer))
	}
	if s.Model != "" {
		parts = append(parts, fmt.Sprintf("model %q", s.Model))
	}
	return strings.Join(parts, ", ")
}

func (s TokenSelector) matches(slot Slot) bool {
	if s.SlotID != nil && *s.SlotID != slot.ID {
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
// With a slot ID that the module does not know, it returns ErrSlotNotFound;
// with a known slot that holds no token, ErrNoToken; when nothing matches,
// ErrTokenNotFound listing the tokens present; when several match (or, for
// the zero selector, several tokens are present), ErrAmbiguousToken listing
// them. All are *SelectionError.
func (m *Module) FindSlot(sel TokenSelector) (Slot, error) {
	if err := m.enter("find slot"); err != nil {
		return Slot{}, err
	}
	defer m.gate.leave()
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
				return Slot{}, &SelectionError{Kind: ErrNoToken, Wanted: sel.String(), Tokens: slots,
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
		return Slot{}, &SelectionError{Kind: ErrAmbiguousToken, Wanted: sel.String(), Candidates: describeTokens(matched), Tokens: matched}
	}
	if sel.SlotID != nil {
		for _, s := range slots {
			if s.ID == *sel.SlotID && s.Token == nil {
				return Slot{}, &SelectionError{Kind: ErrNoToken, Wanted: sel.String(),
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
			return Slot{}, &SelectionError{Kind: ErrSlotNotFound, Wanted: sel.String(), Candidates: ids, Tokens: slots}
		}
	}
	if len(present) == 0 {
		return Slot{}, &SelectionError{Kind: ErrNoToken, Wanted: sel.String(), Tokens: slots,
			Candidates: []string{"no slot holds a token; insert the card (is pcscd running?)"}}
	}
	return Slot{}, &SelectionError{Kind: ErrTokenNotFound, Wanted: sel.String(), Candidates: describeTokens(present), Tokens: present}
}
