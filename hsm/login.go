package hsm

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// PINSource returns the PIN to present to the token, a fresh slice each
// time: the caller zeroes it once presented. A nil PINSource means: no PIN,
// use the reader's PIN pad if it has one.
type PINSource func() ([]byte, error)

// StaticPIN returns a PINSource that hands out copies of its own copy of pin.
func StaticPIN(pin []byte) PINSource {
	kept := append([]byte(nil), pin...)
	return func() ([]byte, error) { return append([]byte(nil), kept...), nil }
}

// PINFile returns a PINSource that reads the PIN from the file at path each
// time the token asks (a login, each signature of a CKA_ALWAYS_AUTHENTICATE
// key), as mp-hsm's --pin-file does, with safefile.ReadSecret: a file that is
// unsafe, empty or unreadable is an error naming the path, never a PIN that
// spends a login attempt.
func PINFile(path string) PINSource {
	return func() ([]byte, error) {
		pin, _, err := safefile.ReadSecret(path, safefile.MaxPIN)
		if err != nil {
			return nil, fmt.Errorf("PIN file %w", err)
		}
		return pin, nil
	}
}

// LoginOptions configures Token.Login.
type LoginOptions struct {
	// AllowFinalTry lets Login present a PIN although the token says the
	// next wrong PIN locks it (CKF_USER_PIN_FINAL_TRY). Set it only when a
	// person has just typed the PIN and was told the risk.
	AllowFinalTry bool
	// Prompt, when set, is asked for the PIN when Login is given no PIN
	// source and the reader has no PIN pad, and only when a PIN is needed
	// and would be presented.
	Prompt PINSource
}

// Login logs the user in with the PIN from pin, or through the reader's PIN
// pad when pin is nil and the token has a protected authentication path.
//
// Lockout warning: smart cards lock after a few wrong PINs. Login reads the
// token flags first (see freshFlags) and does nothing when no login is
// needed; refuses, presenting nothing, when the PIN is locked
// (tokenerr.ErrPINLocked) or on its final try (tokenerr.ErrPINFinalTry,
// unless opts.AllowFinalTry); warns in the log on a low PIN count; and calls
// pin and C_Login exactly once, never again: a wrong PIN returns a *PINError
// with the flags read after the attempt. The PIN bytes are zeroed after
// C_Login; the source is kept for CKA_ALWAYS_AUTHENTICATE keys, which need it
// before each signature.
func (t *Token) Login(pin PINSource, opts LoginOptions) error {
	return t.locked("login", false, func() error {
		flags, ok := t.m.freshFlags(t.slotID)
		if !ok {
			ti, err := t.p.GetTokenInfo(t.slotID)
			if err != nil {
				return wrap("C_GetTokenInfo", err)
			}
			flags = TokenFlags(ti.Flags)
		}
		switch {
		case !flags.LoginRequired():
			t.loggedIn = true
			return nil
		case flags.PINLocked():
			return &PINError{Kind: tokenerr.ErrPINLocked, Flags: flags}
		case flags.PINFinalTry() && !opts.AllowFinalTry:
			return &PINError{Kind: tokenerr.ErrPINFinalTry, Flags: flags}
		case flags.PINCountLow():
			t.log.Warn("the token reports a low PIN count: a wrong PIN was entered since the last login", "slot", t.slotID)
		}
		if pin == nil && !flags.ProtectedAuthPath() {
			pin = opts.Prompt
		}
		secret, err := readPIN(pin, "login")
		if err != nil {
			return err
		}
		defer clear(secret)
		if len(secret) == 0 && !flags.ProtectedAuthPath() {
			return &PINError{Kind: tokenerr.ErrPINRequired, Flags: flags}
		}
		loginAttempts.Add(1)
		err = t.p.Login(t.loginSH, pkcs11.CKU_USER, bytesAsString(secret))
		if err != nil && !errors.Is(err, ReturnValue(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
			return t.refusal(err, flags)
		}
		t.loggedIn = true
		t.pin = pin
		t.certs = nil // a token may show more certificates after a login
		return nil
	})
}

// readPIN asks src, which may be nil, for the PIN; the caller clears it.
func readPIN(src PINSource, op string) ([]byte, error) {
	if src == nil {
		return nil, nil
	}
	secret, err := src()
	if err != nil {
		return nil, fmt.Errorf("%s: reading the PIN: %w", op, err)
	}
	return secret, nil
}

// refusal describes the failed C_Login err, with the flags read afresh
// (before, when they cannot be). A refusal naming no PIN error may still
// have counted a wrong PIN (some drivers say CKR_FUNCTION_FAILED): it is
// ErrLoginFailed, never a fault to log in again after.
func (t *Token) refusal(err error, before TokenFlags) *PINError {
	var rv ReturnValue
	errors.As(err, &rv)
	e := &PINError{Kind: kindOf(rv), Code: rv, Flags: before, Attempted: true}
	if ti, err := t.p.GetTokenInfo(t.slotID); err == nil {
		e.Flags = TokenFlags(ti.Flags)
	}
	switch e.Kind {
	case tokenerr.ErrPINIncorrect:
		if e.Flags.PINLocked() {
			e.Kind = tokenerr.ErrPINLocked
		}
	case tokenerr.ErrPINLocked, tokenerr.ErrPINExpired, tokenerr.ErrPINInvalid:
	default:
		e.Kind = tokenerr.ErrLoginFailed
	}
	return e
}

// bytesAsString views b as a string without copying, so that the only copy
// of the PIN in Go memory is the caller's slice, which is zeroed after use.
// The string must not outlive b's contents.
func bytesAsString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// contextLogin presents the PIN for one operation on a key with
// CKA_ALWAYS_AUTHENTICATE, on session sh, between C_SignInit and C_Sign.
//
// Once a context login has failed, every later one returns that refusal
// without calling C_Login: the PIN may be wrong, and presenting it per
// signature would lock the card. Except CKR_USER_TYPE_INVALID, from a
// module that knows no context login (opencryptoki): it rejects the user
// type before the PIN, so no try is spent, and this Token then signs
// without one, saying so once in the debug log.
func (t *Token) contextLogin(sh sessionHandle) error {
	// Signatures run in parallel: without this, each could present a wrong PIN
	// before the first refusal is recorded, and three would lock a card.
	t.ctxLogin.Lock()
	defer t.ctxLogin.Unlock()
	t.mu.Lock()
	src, refused, skip := t.pin, t.refused, t.noContextLogin
	t.mu.Unlock()
	if skip {
		return nil
	}
	if refused != nil {
		return refused
	}
	secret, err := readPIN(src, "context login")
	if err != nil {
		return err
	}
	defer clear(secret)
	loginAttempts.Add(1)
	err = t.p.Login(sh, pkcs11.CKU_CONTEXT_SPECIFIC, bytesAsString(secret))
	if err == nil {
		return nil
	}
	if errors.Is(err, ReturnValue(pkcs11.CKR_USER_TYPE_INVALID)) {
		t.mu.Lock()
		first := !t.noContextLogin
		t.noContextLogin = true
		t.mu.Unlock()
		if first {
			t.log.Debug("the module refuses context-specific logins (CKR_USER_TYPE_INVALID) although the key has CKA_ALWAYS_AUTHENTICATE: "+
				"signing without one; no PIN try was spent", "slot", t.slotID)
		}
		return nil
	}
	e := t.refusal(err, 0)
	t.mu.Lock()
	if t.refused == nil {
		r := *e
		r.Attempted = false // remembered: not presented again
		t.refused = &r
	}
	t.mu.Unlock()
	return e
}

// LoggedIn reports whether Login succeeded on this token and the token is
// still open.
func (t *Token) LoggedIn() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.loggedIn && !t.gate.closed()
}

// Login's guard needs the PIN flags as they are just before C_Login. Flags
// this Module read under flagsFreshFor ago (FindSlot, OpenSlot, Login in a
// row) with no login attempt since are as fresh, and save a round trip on a
// network HSM: Login takes them once. A login attempt on any Token may change
// the flags, so loginAttempts counts them and flags read before one go unused.
const flagsFreshFor = time.Second

var loginAttempts atomic.Uint64

type seenFlags struct {
	flags    TokenFlags
	at       time.Time
	attempts uint64 // loginAttempts when read
}

// noteFlags records the flags just read of slot's token.
func (m *Module) noteFlags(slot uint, f TokenFlags) {
	m.seenMu.Lock()
	defer m.seenMu.Unlock()
	m.seen[slot] = seenFlags{flags: f, at: time.Now(), attempts: loginAttempts.Load()}
}

// freshFlags returns, and forgets, slot's fresh flags (see above).
func (m *Module) freshFlags(slot uint) (f TokenFlags, ok bool) {
	m.seenMu.Lock()
	defer m.seenMu.Unlock()
	s, ok := m.seen[slot]
	delete(m.seen, slot)
	if !ok || s.attempts != loginAttempts.Load() || time.Since(s.at) >= flagsFreshFor {
		return 0, false
	}
	return s.flags, true
}
