package hsm

import (
	"fmt"
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

func tokenInfo(ti ckTokenInfo) *TokenInfo {
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
	if err := m.enter("list slots"); err != nil {
		return nil, err
	}
	defer m.gate.leave()
	return m.slots()
}

// slots lists the slots. The caller is inside m.gate.
func (m *Module) slots() ([]Slot, error) {
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

// tokenSlots lists the slots with their tokens' information only: one
// C_GetTokenInfo per slot and no C_GetSlotInfo, so that the slot
// information FindSlot does not need costs no call (on a network HSM every
// call is a round trip). A slot whose token cannot be read, or holds none
// (CKR_TOKEN_NOT_PRESENT), has a nil Token. The caller is inside m.gate.
func (m *Module) tokenSlots() ([]Slot, error) {
	ids, err := m.p.GetSlotList(false)
	if err != nil {
		return nil, wrap("C_GetSlotList", err)
	}
	slots := make([]Slot, len(ids))
	for i, id := range ids {
		slots[i].ID = id
		if ti, err := m.p.GetTokenInfo(id); err == nil {
			slots[i].TokenPresent = true
			slots[i].Token = tokenInfo(ti)
			m.noteFlags(id, slots[i].Token.Flags)
		}
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
		m.noteFlags(id, s.Token.Flags)
	}
	return s, nil
}
