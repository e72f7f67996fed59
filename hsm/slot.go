package hsm

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/miekg/pkcs11"
)

// TokenFlags are a token's CK_TOKEN_INFO flags.
type TokenFlags uint

// Has reports whether every bit of flag (a pkcs11.CKF_* token flag) is set.
func (f TokenFlags) Has(flag uint) bool { return uint(f)&flag == flag }

// LoginRequired reports CKF_LOGIN_REQUIRED.
func (f TokenFlags) LoginRequired() bool { return f.Has(pkcs11.CKF_LOGIN_REQUIRED) }

// ProtectedAuthPath reports CKF_PROTECTED_AUTHENTICATION_PATH: the reader
// has a PIN pad and the PIN is entered there, not given to C_Login.
func (f TokenFlags) ProtectedAuthPath() bool {
	return f.Has(pkcs11.CKF_PROTECTED_AUTHENTICATION_PATH)
}

// PINCountLow reports CKF_USER_PIN_COUNT_LOW: a wrong PIN was entered since
// the last successful login.
func (f TokenFlags) PINCountLow() bool { return f.Has(pkcs11.CKF_USER_PIN_COUNT_LOW) }

// PINFinalTry reports CKF_USER_PIN_FINAL_TRY: one more wrong PIN locks the
// token.
func (f TokenFlags) PINFinalTry() bool { return f.Has(pkcs11.CKF_USER_PIN_FINAL_TRY) }

// PINLocked reports CKF_USER_PIN_LOCKED.
func (f TokenFlags) PINLocked() bool { return f.Has(pkcs11.CKF_USER_PIN_LOCKED) }

// PINToBeChanged reports CKF_USER_PIN_TO_BE_CHANGED.
func (f TokenFlags) PINToBeChanged() bool { return f.Has(pkcs11.CKF_USER_PIN_TO_BE_CHANGED) }

// WriteProtected reports CKF_WRITE_PROTECTED.
func (f TokenFlags) WriteProtected() bool { return f.Has(pkcs11.CKF_WRITE_PROTECTED) }

// Initialized reports CKF_TOKEN_INITIALIZED.
func (f TokenFlags) Initialized() bool { return f.Has(pkcs11.CKF_TOKEN_INITIALIZED) }

// TriesLeft says, in words, what the flags tell about the PIN tries left.
func (f TokenFlags) TriesLeft() string {
	switch {
	case f.PINLocked():
		return "the token now says the PIN is locked"
	case f.PINFinalTry():
		return "the token says ONE try is left before it locks"
	case f.PINCountLow():
		return "the token says few tries are left"
	default:
		return "the token does not report how many tries are left"
	}
}

var flagNames = []struct {
	flag uint
	name string
}{
	{pkcs11.CKF_TOKEN_INITIALIZED, "initialized"},
	{pkcs11.CKF_LOGIN_REQUIRED, "login-required"},
	{pkcs11.CKF_USER_PIN_INITIALIZED, "user-pin-initialized"},
	{pkcs11.CKF_PROTECTED_AUTHENTICATION_PATH, "pin-pad"},
	{pkcs11.CKF_WRITE_PROTECTED, "write-protected"},
	{pkcs11.CKF_USER_PIN_COUNT_LOW, "pin-count-low"},
	{pkcs11.CKF_USER_PIN_FINAL_TRY, "pin-final-try"},
	{pkcs11.CKF_USER_PIN_LOCKED, "pin-locked"},
	{pkcs11.CKF_USER_PIN_TO_BE_CHANGED, "pin-to-be-changed"},
}

// Names returns the names of the flags that matter to mp-hsm, such as
// "login-required" or "pin-final-try".
func (f TokenFlags) Names() []string {
	var out []string
	for _, n := range flagNames {
		if f.Has(n.flag) {
			out = append(out, n.name)
		}
	}
	return out
}

// String joins Names with commas.
func (f TokenFlags) String() string { return strings.Join(f.Names(), ",") }

// TokenInfo describes a token (C_GetTokenInfo).
type TokenInfo struct {
	Label        string
	Serial       string
	Manufacturer string
	Model        string
	Flags        TokenFlags
	// MaxSessions is the token's session limit; 0 means no limit or unknown.
	MaxSessions uint
}

// Slot is a slot and, when one is present, its token.
type Slot struct {
	ID           uint
	Description  string
	Manufacturer string
	TokenPresent bool
	Removable    bool
	Hardware     bool
	Token        *TokenInfo // nil when no token is present or it cannot be read
	// Problem says why a present token's information could not be read
	// (for instance a token being removed), or is empty.
	Problem string
}

// String describes the slot and token in one short phrase.
func (s Slot) String() string {
	if s.Token == nil {
		if s.Problem != "" {
			return fmt.Sprintf("slot %d (%s): %s", s.ID, s.Description, s.Problem)
		}
		return fmt.Sprintf("slot %d (%s): no token", s.ID, s.Description)
	}
	return fmt.Sprintf("slot %d: token %q serial %q", s.ID, s.Token.Label, s.Token.Serial)
}

func tokenInfo(ti pkcs11.TokenInfo) *TokenInfo {
	maxs := ti.MaxSessionCount
	if maxs == pkcs11.CK_UNAVAILABLE_INFORMATION {
		maxs = 0
	}
	return &TokenInfo{
		Label:        strings.TrimRight(ti.Label, " \x00"),
		Serial:       strings.TrimRight(ti.SerialNumber, " \x00"),
		Manufacturer: strings.TrimRight(ti.ManufacturerID, " \x00"),
		Model:        strings.TrimRight(ti.Model, " \x00"),
		Flags:        TokenFlags(ti.Flags),
		MaxSessions:  maxs,
	}
}

// Slots lists every slot the module reports, with token information for the
// slots that hold a token. It needs no login.
func (m *Module) Slots() ([]Slot, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	ids, err := m.p.GetSlotList(false)
	if err != nil {
		return nil, wrap("C_GetSlotList", err)
	}
	slots := make([]Slot, 0, len(ids))
	for _, id := range ids {
		s, err := m.slot(id)
		if err != nil {
			return nil, err
		}
		slots = append(slots, s)
	}
	return slots, nil
}

func (m *Module) slot(id uint) (Slot, error) {
	si, err := m.p.GetSlotInfo(id)
	if err != nil {
		return Slot{}, wrap(fmt.Sprintf("C_GetSlotInfo(slot %d)", id), err)
	}
	s := Slot{
		ID:           id,
		Description:  strings.TrimRight(si.SlotDescription, " \x00"),
		Manufacturer: strings.TrimRight(si.ManufacturerID, " \x00"),
		TokenPresent: si.Flags&pkcs11.CKF_TOKEN_PRESENT != 0,
		Removable:    si.Flags&pkcs11.CKF_REMOVABLE_DEVICE != 0,
		Hardware:     si.Flags&pkcs11.CKF_HW_SLOT != 0,
	}
	if s.TokenPresent {
		// One unreadable token (being removed, not recognised) must not
		// hide the others: record the problem and go on.
		ti, err := m.p.GetTokenInfo(id)
		if err != nil {
			s.Problem = wrap(fmt.Sprintf("C_GetTokenInfo(slot %d)", id), err).Error()
			return s, nil
		}
		s.Token = tokenInfo(ti)
	}
	return s, nil
}

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
	slots, err := m.Slots()
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
