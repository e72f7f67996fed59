//go:build cgo

package hsm

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// flagDouble sits in front of a real SoftHSM2 module, adds token flags that
// SoftHSM2 never sets (PIN final try, PIN locked) and counts C_Login calls.
type flagDouble struct {
	p11
	extra   uint
	logins  atomic.Int32
	lastPIN atomic.Int32 // length of the last PIN presented; 0 means NULL
	infos   atomic.Int32 // C_GetTokenInfo calls
}

func (d *flagDouble) GetTokenInfo(slot uint) (pkcs11.TokenInfo, error) {
	d.infos.Add(1)
	ti, err := d.p11.GetTokenInfo(slot)
	ti.Flags |= d.extra
	return ti, err
}

func (d *flagDouble) Login(sh pkcs11.SessionHandle, userType uint, pin string) error {
	d.logins.Add(1)
	d.lastPIN.Store(int32(len(pin)))
	return d.p11.Login(sh, userType, pin)
}

func openDouble(t *testing.T, extra uint) (*Token, *flagDouble, *softhsm.Token) {
	t.Helper()
	st := softhsm.New(t)
	m, err := Open(st.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	d := &flagDouble{p11: m.p, extra: extra}
	m.p = d
	tok, err := m.OpenSlot(Slot{ID: st.SlotID}, TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return tok, d, st
}

func TestLoginRefusesFinalTryAndLocked(t *testing.T) {
	for _, tc := range []struct {
		name   string
		flags  uint
		opts   LoginOptions
		want   error
		logins int32
	}{
		{"final try refused", pkcs11.CKF_USER_PIN_FINAL_TRY, LoginOptions{}, tokenerr.ErrPINFinalTry, 0},
		{"locked refused", pkcs11.CKF_USER_PIN_LOCKED, LoginOptions{AllowFinalTry: true}, tokenerr.ErrPINLocked, 0},
		{"final try allowed", pkcs11.CKF_USER_PIN_FINAL_TRY, LoginOptions{AllowFinalTry: true}, nil, 1},
		{"count low warns and tries", pkcs11.CKF_USER_PIN_COUNT_LOW, LoginOptions{}, nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, d, st := openDouble(t, tc.flags)
			called := 0
			src := func() ([]byte, error) { called++; return []byte(st.PIN), nil }
			err := tok.Login(src, tc.opts)
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("Login = %v, want %v", err, tc.want)
			}
			if got := d.logins.Load(); got != tc.logins {
				t.Errorf("C_Login called %d times, want %d", got, tc.logins)
			}
			if tc.logins == 0 && called != 0 {
				t.Errorf("the PIN source was read although no login was tried")
			}
			var pe *PINError
			if tc.want != nil && (!errors.As(err, &pe) || pe.Attempted) {
				t.Errorf("error %v: want a *PINError with Attempted false", err)
			}
			if tc.want == tokenerr.ErrPINFinalTry && !strings.Contains(err.Error(), "--allow-final-pin-try") {
				t.Errorf("error %q does not name the flag that allows the final try", err)
			}
		})
	}
}

func TestWrongPINReportsFlagsAndNeverRetries(t *testing.T) {
	tok, d, _ := openDouble(t, 0)
	d.extra = 0
	err := tok.Login(StaticPIN([]byte("0000")), LoginOptions{})
	var pe *PINError
	if !errors.As(err, &pe) || !errors.Is(err, tokenerr.ErrPINIncorrect) || !pe.Attempted {
		t.Fatalf("Login with a wrong PIN = %v, want an attempted *PINError tokenerr.ErrPINIncorrect", err)
	}
	if d.logins.Load() != 1 {
		t.Fatalf("C_Login called %d times, want 1", d.logins.Load())
	}
	// After a wrong PIN the flags say final try: the next Login refuses
	// without calling C_Login, even with the right PIN.
	d.extra = pkcs11.CKF_USER_PIN_FINAL_TRY
	err = tok.Login(StaticPIN([]byte("123456")), LoginOptions{})
	if !errors.Is(err, tokenerr.ErrPINFinalTry) || d.logins.Load() != 1 {
		t.Fatalf("Login on final try = %v with %d C_Login calls; want tokenerr.ErrPINFinalTry and no new call", err, d.logins.Load())
	}
}

// TestAlwaysAuthenticateIsEnforced shows that SoftHSM2 refuses a signature
// with a CKA_ALWAYS_AUTHENTICATE key without the context-specific login, so
// the passing signature test proves that Key.Sign does it.
func TestAlwaysAuthenticateIsEnforced(t *testing.T) {
	tok, _, st := openDouble(t, 0)
	st.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{7}, AlwaysAuthenticate: true})
	if err := tok.Login(StaticPIN([]byte(st.PIN)), LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	k, err := tok.FindKey(KeySelector{ID: []byte{7}})
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	mech, in, err := k.mechanism(d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := tok.p.OpenSession(tok.slotID, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.p.CloseSession(sh)
	if err := tok.p.SignInit(sh, mech, k.handle); err != nil {
		t.Fatal(err)
	}
	if _, err := tok.p.Sign(sh, in); err == nil {
		t.Fatal("SoftHSM2 signed with an always-authenticate key without C_Login(CKU_CONTEXT_SPECIFIC)")
	}
	// A wrong PIN at the context login is reported and not retried.
	bad := &Token{p: tok.p, slotID: tok.slotID, pin: StaticPIN([]byte("0000"))}
	if err := tok.p.SignInit(sh, mech, k.handle); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_OPERATION_ACTIVE)) {
		t.Fatal(err)
	}
	if err := bad.contextLogin(sh); !errors.Is(err, tokenerr.ErrPINIncorrect) {
		t.Fatalf("context login with a wrong PIN = %v, want tokenerr.ErrPINIncorrect", err)
	}
}

// Signatures in parallel with a wrong PIN for an always-authenticate key
// present it once: the others get the remembered refusal, no C_Login.
func TestContextLoginRefusedOnceInParallel(t *testing.T) {
	tok, d, st := openDouble(t, 0)
	st.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{8}, AlwaysAuthenticate: true})
	if err := tok.Login(StaticPIN([]byte(st.PIN)), LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	k, err := tok.FindKey(KeySelector{ID: []byte{8}})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))
	mech, _, err := k.mechanism(digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	// The source holds each reader a moment, so that without one context login
	// at a time every goroutine would be past the refused check together.
	slow := func() ([]byte, error) { time.Sleep(20 * time.Millisecond); return []byte("0000"), nil }
	bad := &Token{p: tok.p, slotID: tok.slotID, pin: slow}
	before := d.logins.Load()
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range cap(errs) {
		wg.Go(func() {
			sh, err := tok.p.OpenSession(tok.slotID, pkcs11.CKF_SERIAL_SESSION)
			if err != nil {
				errs <- err
				return
			}
			defer tok.p.CloseSession(sh)
			if err := tok.p.SignInit(sh, mech, k.handle); err != nil {
				errs <- err
				return
			}
			errs <- bad.contextLogin(sh)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, tokenerr.ErrPINIncorrect) {
			t.Errorf("context login = %v, want tokenerr.ErrPINIncorrect", err)
		}
	}
	if n := d.logins.Load() - before; n != 1 {
		t.Fatalf("%d C_Login calls for 8 parallel signatures with a wrong PIN, want 1", n)
	}
}

// brokenSlot makes C_GetTokenInfo fail for one slot, as a token being
// removed does.
type brokenSlot struct {
	p11
	bad uint
}

func (b *brokenSlot) GetTokenInfo(slot uint) (pkcs11.TokenInfo, error) {
	if slot == b.bad {
		return pkcs11.TokenInfo{}, pkcs11.Error(pkcs11.CKR_DEVICE_REMOVED)
	}
	return b.p11.GetTokenInfo(slot)
}

func TestOneUnreadableSlotDoesNotHideOthers(t *testing.T) {
	good := softhsm.New(t)
	bad := softhsm.New(t)
	m, err := Open(good.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.p = &brokenSlot{p11: m.p, bad: bad.SlotID}
	s, err := m.FindSlot(TokenSelector{Label: good.Label})
	if err != nil || s.ID != good.SlotID {
		t.Fatalf("FindSlot(good) with another slot failing = %v, %v", s, err)
	}
	slots, err := m.Slots()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if s.ID == bad.SlotID && (s.Token != nil || s.Problem == "") {
			t.Fatalf("the failing slot shows %+v; want no token and a problem", s)
		}
	}
}

// TestPINPadLogsInWithNullPIN: on a reader with a PIN pad
// (CKF_PROTECTED_AUTHENTICATION_PATH) and no PIN given, Login presents a
// NULL PIN (miekg/pkcs11 passes NULL for an empty one) and never asks the
// prompt. SoftHSM2 has no pad, so it refuses; what matters is the call.
func TestPINPadLogsInWithNullPIN(t *testing.T) {
	tok, d, _ := openDouble(t, pkcs11.CKF_PROTECTED_AUTHENTICATION_PATH)
	prompted := false
	_ = tok.Login(nil, LoginOptions{Prompt: func() ([]byte, error) { prompted = true; return []byte("1"), nil }})
	if d.logins.Load() != 1 || d.lastPIN.Load() != 0 || prompted {
		t.Fatalf("C_Login calls %d, PIN length %d, prompted %v; want one call with a NULL PIN and no prompt",
			d.logins.Load(), d.lastPIN.Load(), prompted)
	}
}
