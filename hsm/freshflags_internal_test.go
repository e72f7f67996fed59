//go:build cgo

package hsm

import (
	"errors"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// TestLoginTakesFlagsJustRead: the flags OpenSlot read a moment ago guard
// the login; Login makes no C_GetTokenInfo of its own, and still refuses a
// token on its final try without presenting the PIN.
func TestLoginTakesFlagsJustRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		extra  uint
		want   error
		logins int32
	}{
		{"logs in", 0, nil, 1},
		{"final try refused", pkcs11.CKF_USER_PIN_FINAL_TRY, tokenerr.ErrPINFinalTry, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, d, st := openDouble(t, tc.extra)
			before := d.infos.Load()
			err := tok.Login(StaticPIN([]byte(st.PIN)), LoginOptions{})
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("Login = %v, want %v", err, tc.want)
			}
			if n := d.infos.Load() - before; n != 0 {
				t.Errorf("Login made %d C_GetTokenInfo calls, want 0 (the flags OpenSlot read)", n)
			}
			if got := d.logins.Load(); got != tc.logins {
				t.Errorf("C_Login called %d times, want %d", got, tc.logins)
			}
		})
	}
}

// TestLoginRereadsFlagsAfterALoginAttempt: flags read before a login
// attempt made anywhere in the process (here a wrong PIN through another
// Module of the same module file) are not taken: Login reads them again,
// sees the final try and presents no PIN.
func TestLoginRereadsFlagsAfterALoginAttempt(t *testing.T) {
	tokA, d, st := openDouble(t, 0)
	m2, err := Open(st.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2.Close() })
	m2.p = d
	tokB, err := m2.OpenSlot(Slot{ID: st.SlotID}, TokenOptions{}) // flags read now: no final try
	if err != nil {
		t.Fatal(err)
	}
	if err := tokA.Login(StaticPIN([]byte("0000")), LoginOptions{}); !errors.Is(err, tokenerr.ErrPINIncorrect) {
		t.Fatalf("Login with a wrong PIN = %v, want tokenerr.ErrPINIncorrect", err)
	}
	d.extra = pkcs11.CKF_USER_PIN_FINAL_TRY // what the token says after the wrong PIN
	before, logins := d.infos.Load(), d.logins.Load()
	err = tokB.Login(StaticPIN([]byte(st.PIN)), LoginOptions{})
	if !errors.Is(err, tokenerr.ErrPINFinalTry) {
		t.Fatalf("Login after another's wrong PIN = %v, want tokenerr.ErrPINFinalTry", err)
	}
	if d.logins.Load() != logins {
		t.Errorf("C_Login was called on a token on its final try")
	}
	if d.infos.Load() == before {
		t.Errorf("Login took flags read before a login attempt instead of reading them again")
	}
}

// TestLoginRereadsOldFlags: flags read flagsFreshFor ago or more are read
// again.
func TestLoginRereadsOldFlags(t *testing.T) {
	tok, d, st := openDouble(t, 0)
	tok.m.seenMu.Lock()
	s := tok.m.seen[st.SlotID]
	s.at = s.at.Add(-flagsFreshFor - time.Millisecond)
	tok.m.seen[st.SlotID] = s
	tok.m.seenMu.Unlock()
	d.extra = pkcs11.CKF_USER_PIN_LOCKED // changed since the read
	before := d.infos.Load()
	err := tok.Login(StaticPIN([]byte(st.PIN)), LoginOptions{AllowFinalTry: true})
	if !errors.Is(err, tokenerr.ErrPINLocked) {
		t.Fatalf("Login = %v, want tokenerr.ErrPINLocked from a new read", err)
	}
	if d.infos.Load() == before || d.logins.Load() != 0 {
		t.Errorf("%d C_GetTokenInfo and %d C_Login calls; want a new read and no C_Login", d.infos.Load()-before, d.logins.Load())
	}
}
