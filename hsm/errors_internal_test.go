//go:build cgo

package hsm

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

func TestErrorPredicates(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		kind       error // nil: do not check
		transient  bool
		pinRefused bool
	}{
		{"nil", nil, nil, false, false},
		{"device removed", wrap("C_Sign", pkcs11.Error(pkcs11.CKR_DEVICE_REMOVED)), tokenerr.ErrTokenRemoved, true, false},
		{"token not present", wrap("C_GetTokenInfo", pkcs11.Error(pkcs11.CKR_TOKEN_NOT_PRESENT)), tokenerr.ErrTokenRemoved, true, false},
		{"session handle invalid", wrap("C_Sign", pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID)), tokenerr.ErrSessionClosed, true, false},
		{"device error", wrap("C_Sign", pkcs11.Error(pkcs11.CKR_DEVICE_ERROR)), tokenerr.ErrDevice, true, false},
		{"not logged in", wrap("C_SignInit", pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)), tokenerr.ErrNotLoggedIn, true, false},
		{"key handle invalid", wrap("C_SignInit", pkcs11.Error(pkcs11.CKR_KEY_HANDLE_INVALID)), tokenerr.ErrObjectGone, true, false},
		{"object handle invalid", wrap("C_GetAttributeValue", pkcs11.Error(pkcs11.CKR_OBJECT_HANDLE_INVALID)), tokenerr.ErrObjectGone, true, false},
		{"no token in the slot", &SelectionError{Kind: tokenerr.ErrNoToken}, tokenerr.ErrNoToken, true, false},
		{"wrapped again with %w", fmt.Errorf("signing: %w", wrap("C_Sign", pkcs11.Error(pkcs11.CKR_DEVICE_REMOVED))), tokenerr.ErrTokenRemoved, true, false},

		{"PIN incorrect", &PINError{Kind: tokenerr.ErrPINIncorrect, Code: pkcs11.CKR_PIN_INCORRECT, Attempted: true}, tokenerr.ErrPINIncorrect, false, true},
		{"PIN locked", &PINError{Kind: tokenerr.ErrPINLocked}, tokenerr.ErrPINLocked, false, true},
		{"PIN final try", &PINError{Kind: tokenerr.ErrPINFinalTry}, tokenerr.ErrPINFinalTry, false, true},
		{"PIN required", &PINError{Kind: tokenerr.ErrPINRequired}, tokenerr.ErrPINRequired, false, true},
		{"PIN expired from C_Login", wrap("C_Login", pkcs11.Error(pkcs11.CKR_PIN_EXPIRED)), tokenerr.ErrPINExpired, false, true},
		{"PIN length", wrap("C_Login", pkcs11.Error(pkcs11.CKR_PIN_LEN_RANGE)), tokenerr.ErrPINInvalid, false, true},
		{"context login, wrong PIN", fmt.Errorf("sign: %w", &PINError{Kind: tokenerr.ErrPINIncorrect}), tokenerr.ErrPINIncorrect, false, true},

		{"closed", &Error{Op: "sign", Kind: tokenerr.ErrClosed}, tokenerr.ErrClosed, false, false},
		{"key not found", &SelectionError{Kind: tokenerr.ErrKeyNotFound}, tokenerr.ErrKeyNotFound, false, false},
		{"mechanism invalid", wrap("C_SignInit", pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID)), tokenerr.ErrUnsupported, false, false},
		{"other module error", wrap("C_Sign", pkcs11.Error(pkcs11.CKR_DATA_LEN_RANGE)), tokenerr.ErrModule, false, false},
		{"not from hsm", errors.New("EOF"), nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.kind != nil && !errors.Is(tc.err, tc.kind) {
				t.Errorf("errors.Is(%v, %v) = false", tc.err, tc.kind)
			}
			if got := tokenerr.Transient(tc.err); got != tc.transient {
				t.Errorf("tokenerr.Transient(%v) = %v, want %v", tc.err, got, tc.transient)
			}
			if got := tokenerr.IsPINRefused(tc.err); got != tc.pinRefused {
				t.Errorf("tokenerr.IsPINRefused(%v) = %v, want %v", tc.err, got, tc.pinRefused)
			}
		})
	}
}

// TestErrorPredicatesOnSoftHSM classifies errors SoftHSM2 really gives: a
// wrong PIN, a key deleted under a Key (a stale handle), and a closed token.
func TestErrorPredicatesOnSoftHSM(t *testing.T) {
	st := softhsm.New(t)
	st.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}})
	m, err := Open(st.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok, err := m.OpenSlot(Slot{ID: st.SlotID}, TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()

	err = tok.Login(StaticPIN([]byte("000000")), LoginOptions{})
	if !tokenerr.IsPINRefused(err) || tokenerr.Transient(err) {
		t.Errorf("wrong PIN %v: IsPINRefused %v, Transient %v; want true, false", err, tokenerr.IsPINRefused(err), tokenerr.Transient(err))
	}
	if err := tok.Login(StaticPIN([]byte(st.PIN)), LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	k, err := tok.FindKey(KeySelector{})
	if err != nil {
		t.Fatal(err)
	}
	sh, err := m.lib.ctx.OpenSession(st.SlotID, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.lib.ctx.DestroyObject(sh, k.handle); err != nil {
		t.Fatal(err)
	}
	m.lib.ctx.CloseSession(sh)
	d := sha256.Sum256(nil)
	_, err = k.Sign(nil, d[:], crypto.SHA256)
	if !errors.Is(err, tokenerr.ErrObjectGone) || !tokenerr.Transient(err) || tokenerr.IsPINRefused(err) {
		t.Errorf("signing with a deleted key = %v; want tokenerr.ErrObjectGone, transient", err)
	}

	tok.Close()
	_, err = k.Sign(nil, d[:], crypto.SHA256)
	if !errors.Is(err, tokenerr.ErrClosed) || tokenerr.Transient(err) || tokenerr.IsPINRefused(err) {
		t.Errorf("signing after Close = %v; want tokenerr.ErrClosed, not transient", err)
	}
}

// TestPINLockedMessage: a token that says CKR_PIN_LOCKED with its flags
// (a card) is told to be unblocked with its PUK; one that says it without
// them (tpm2-pkcs11 in the TPM's dictionary-attack lockout, whose SO PIN
// is refused as well) is not.
func TestPINLockedMessage(t *testing.T) {
	card := (&PINError{Kind: tokenerr.ErrPINLocked, Code: pkcs11.CKR_PIN_LOCKED, Attempted: true,
		Flags: TokenFlags(pkcs11.CKF_LOGIN_REQUIRED | pkcs11.CKF_USER_PIN_LOCKED)}).Error()
	tpm := (&PINError{Kind: tokenerr.ErrPINLocked, Code: pkcs11.CKR_PIN_LOCKED, Attempted: true,
		Flags: TokenFlags(pkcs11.CKF_LOGIN_REQUIRED)}).Error()
	if !strings.Contains(card, "PUK") || strings.Contains(card, "dictionary-attack") {
		t.Errorf("card locked: %q", card)
	}
	if strings.Contains(tpm, "PUK") || !strings.Contains(tpm, "dictionary-attack lockout") || !strings.Contains(tpm, "CKR_PIN_LOCKED") {
		t.Errorf("locked without the flag: %q", tpm)
	}
}
