package hsm

import (
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// TokenFlags are a token's CK_TOKEN_INFO flags.
type TokenFlags uint

func (f TokenFlags) has(flag uint) bool { return uint(f)&flag == flag }

// LoginRequired reports CKF_LOGIN_REQUIRED.
func (f TokenFlags) LoginRequired() bool { return f.has(pkcs11.CKF_LOGIN_REQUIRED) }

// ProtectedAuthPath reports CKF_PROTECTED_AUTHENTICATION_PATH: the reader
// has a PIN pad and the PIN is entered there, not given to C_Login.
func (f TokenFlags) ProtectedAuthPath() bool { return f.has(pkcs11.CKF_PROTECTED_AUTHENTICATION_PATH) }

// PINCountLow reports CKF_USER_PIN_COUNT_LOW: a wrong PIN was entered since
// the last successful login.
func (f TokenFlags) PINCountLow() bool { return f.has(pkcs11.CKF_USER_PIN_COUNT_LOW) }

// PINFinalTry reports CKF_USER_PIN_FINAL_TRY: one more wrong PIN locks the
// token.
func (f TokenFlags) PINFinalTry() bool { return f.has(pkcs11.CKF_USER_PIN_FINAL_TRY) }

// PINLocked reports CKF_USER_PIN_LOCKED.
func (f TokenFlags) PINLocked() bool { return f.has(pkcs11.CKF_USER_PIN_LOCKED) }

// PINToBeChanged reports CKF_USER_PIN_TO_BE_CHANGED.
func (f TokenFlags) PINToBeChanged() bool { return f.has(pkcs11.CKF_USER_PIN_TO_BE_CHANGED) }

// Initialized reports CKF_TOKEN_INITIALIZED.
func (f TokenFlags) Initialized() bool { return f.has(pkcs11.CKF_TOKEN_INITIALIZED) }

// triesLeft says, in words, what the flags tell about the PIN tries left.
func (f TokenFlags) triesLeft() string {
	switch {
	case f.PINLocked():
		return "the token now says the PIN is locked"
	case f.PINFinalTry():
		return "the token says ONE try is left before it locks"
	case f.PINCountLow():
		return "the token says few tries are left"
	}
	return "the token does not report how many tries are left"
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
		if f.has(n.flag) {
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
	MaxSessions  uint // the token's session limit; 0 means no limit or unknown
}

// Slot is a slot and, when one is present, its token.
type Slot struct {
	ID           uint
	Description  string
	Manufacturer string
	Token        *TokenInfo // nil when no token is present or it cannot be read
	Problem      string     // why a present token's information could not be read, or ""
}

// String describes the slot and token in one short phrase.
func (s Slot) String() string {
	switch {
	case s.Token != nil:
		return fmt.Sprintf("slot %d: token %q serial %q", s.ID, s.Token.Label, s.Token.Serial)
	case s.Problem != "":
		return fmt.Sprintf("slot %d (%s): %s", s.ID, s.Description, s.Problem)
	}
	return fmt.Sprintf("slot %d (%s): no token", s.ID, s.Description)
}

// trimPadded removes the blank (or NUL) padding of a PKCS#11 text field.
func trimPadded(s string) string { return strings.TrimRight(s, " \x00") }

func tokenInfo(ti ckTokenInfo) *TokenInfo {
	maxs := ti.MaxSessionCount
	if maxs == pkcs11.CK_UNAVAILABLE_INFORMATION {
		maxs = 0
	}
	return &TokenInfo{
		Label:        trimPadded(ti.Label),
		Serial:       trimPadded(ti.SerialNumber),
		Manufacturer: trimPadded(ti.ManufacturerID),
		Model:        trimPadded(ti.Model),
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
	return m.slots(true)
}

// slots lists the slots and tokens, inside m.gate. Without slotInfo it makes
// only one C_GetTokenInfo per slot (a round trip each on a network HSM). A
// token that cannot be read gets a nil Token (and with slotInfo a Problem):
// one unreadable token must not hide the others.
func (m *Module) slots(slotInfo bool) ([]Slot, error) {
	ids, err := m.p.GetSlotList(false)
	if err != nil {
		return nil, wrap("C_GetSlotList", err)
	}
	slots := make([]Slot, len(ids))
	for i, id := range ids {
		s := &slots[i]
		s.ID = id
		if slotInfo {
			si, err := m.p.GetSlotInfo(id)
			if err != nil {
				return nil, wrap(fmt.Sprintf("C_GetSlotInfo(slot %d)", id), err)
			}
			s.Description, s.Manufacturer = trimPadded(si.SlotDescription), trimPadded(si.ManufacturerID)
			if si.Flags&pkcs11.CKF_TOKEN_PRESENT == 0 {
				continue
			}
		}
		ti, err := m.p.GetTokenInfo(id)
		if err != nil {
			if slotInfo {
				s.Problem = wrap(fmt.Sprintf("C_GetTokenInfo(slot %d)", id), err).Error()
			}
			continue
		}
		s.Token = tokenInfo(ti)
		m.noteFlags(id, s.Token.Flags)
	}
	return slots, nil
}
