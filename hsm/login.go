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

// PINSource returns the PIN to present to the token. The caller of a
// PINSource zeroes the returned slice as soon as it has been presented, so a
// PINSource must return a fresh slice each time. A nil PINSource means: no
// PIN, use the reader's PIN pad if it has one.
type PINSource func() ([]byte, error)

// StaticPIN returns a PINSource that hands out copies of pin. It keeps its
// own copy of pin for as long as the PINSource is reachable.
func StaticPIN(pin []byte) PINSource {
	kept := append([]byte(nil), pin...)
	return func() ([]byte, error) { return append([]byte(nil), kept...), nil }
}

// LoginOptions configures Token.Login.
type LoginOptions struct {
	// AllowFinalTry lets Login present a PIN although the token says the
	// next wrong PIN locks it (CKF_USER_PIN_FINAL_TRY). Set it only when a
	// person has just typed the PIN and was told the risk.
	AllowFinalTry bool
	// Prompt, when set, is asked for the PIN when Login is given no PIN
	// source and the reader has no PIN pad, for instance a terminal
	// prompt. It is not asked when the token needs no login or when the
	// login is refused before a PIN is presented.
	Prompt PINSource
}

// Login logs the user in with the PIN from pin, or through the reader's PIN
// pad when pin is nil and the token has a protected authentication path.
//
// Lockout warning: smart cards lock after a few wrong PINs. Login therefore
// reads the token flags first (C_GetTokenInfo, or the flags that the
// Module read less than a second before, when finding or opening the
// token, with no login attempt in this process since: as fresh, and one
// round trip fewer) and
//   - does nothing when the token needs no login;
//   - refuses, without presenting the PIN, when the PIN is locked
//     (tokenerr.ErrPINLocked) or on its final try (tokenerr.ErrPINFinalTry, unless
//     opts.AllowFinalTry);
//   - logs a warning when the token reports a low PIN count;
//   - calls pin once and C_Login exactly once, and never again on its own:
//     a wrong PIN returns a *PINError (tokenerr.ErrPINIncorrect) with the token's
//     flags as read after the attempt.
//
// The PIN bytes are zeroed after C_Login. The PIN source is kept for keys
// with CKA_ALWAYS_AUTHENTICATE, which need the PIN again before each
// signature.
func (t *Token) Login(pin PINSource, opts LoginOptions) error {
	if err := t.enter("login"); err != nil {
		return err
	}
	defer t.leave()
	t.mu.Lock()
	defer t.mu.Unlock()
	flags, ok := t.m.freshFlags(t.slotID)
	if !ok {
		ti, err := t.p.GetTokenInfo(t.slotID)
		if err != nil {
			return wrap("C_GetTokenInfo", err)
		}
		flags = TokenFlags(ti.Flags)
	}
	if !flags.LoginRequired() {
		t.loggedIn = true
		return nil
	}
	if flags.PINLocked() {
		return &PINError{Kind: tokenerr.ErrPINLocked, Flags: flags}
	}
	if flags.PINFinalTry() && !opts.AllowFinalTry {
		return &PINError{Kind: tokenerr.ErrPINFinalTry, Flags: flags}
	}
	if flags.PINCountLow() {
		t.log.Warn("the token reports a low PIN count: a wrong PIN was entered since the last login", "slot", t.slotID)
	}
	if pin == nil && !flags.ProtectedAuthPath() {
		pin = opts.Prompt
	}
	var secret []byte
	if pin != nil {
		var err error
		secret, err = pin()
		if err != nil {
			return fmt.Errorf("login: reading the PIN: %w", err)
		}
		defer clear(secret)
	}
	if len(secret) == 0 && !flags.ProtectedAuthPath() {
		return &PINError{Kind: tokenerr.ErrPINRequired, Flags: flags}
	}
	loginAttempts.Add(1)
	err := t.p.Login(t.loginSH, pkcs11.CKU_USER, bytesAsString(secret))
	if err != nil && !errors.Is(err, ReturnValue(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		var rv ReturnValue
		errors.As(err, &rv)
		kind := kindOf(rv)
		if kind == tokenerr.ErrPINIncorrect || kind == tokenerr.ErrPINLocked || kind == tokenerr.ErrPINExpired || kind == tokenerr.ErrPINInvalid {
			after := flags
			if ti2, err2 := t.p.GetTokenInfo(t.slotID); err2 == nil {
				after = TokenFlags(ti2.Flags)
			}
			if kind == tokenerr.ErrPINIncorrect && after.PINLocked() {
				kind = tokenerr.ErrPINLocked
			}
			return &PINError{Kind: kind, Code: rv, Flags: after, Attempted: true}
		}
		// Any other refusal may still have counted a wrong PIN: some
		// drivers report one as CKR_FUNCTION_FAILED or CKR_DEVICE_ERROR.
		// It is a refused login too, never a fault to log in again after.
		return &PINError{Kind: tokenerr.ErrLoginFailed, Code: rv, Flags: flags, Attempted: true}
	}
	t.loggedIn = true
	t.pin = pin
	t.certs = nil // a token may show more certificates after a login
	return nil
}

// bytesAsString views b as a string without copying, so that the only copy
// of the PIN in Go memory is the caller's slice, which is zeroed after use.
// The string must not outlive b's contents.
func bytesAsString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// contextLogin presents the PIN for one operation on a key with
// CKA_ALWAYS_AUTHENTICATE, on session sh, between C_SignInit and C_Sign.
//
// Once a context login has failed, for whatever reason the module gives,
// every later one returns that refusal without calling C_Login: the PIN
// may be wrong, and presenting it per signature would lock the card.
//
// One refusal is not a failure: CKR_USER_TYPE_INVALID, with which a module
// that knows no context-specific login answers (opencryptoki stores
// CKA_ALWAYS_AUTHENTICATE but does not enforce it). The module rejects the
// user type before it looks at the PIN, so no PIN try is spent. The
// signature then goes on without a context login, this and every later
// time on this Token (C_Login is not called again), and the debug log says
// so once.
func (t *Token) contextLogin(sh sessionHandle) error {
	t.mu.Lock()
	src, refused, skip := t.pin, t.refused, t.noContextLogin
	t.mu.Unlock()
	if skip {
		return nil
	}
	if refused != nil {
		return refused
	}
	var secret []byte
	if src != nil {
		var err error
		secret, err = src()
		if err != nil {
			return fmt.Errorf("context login: reading the PIN: %w", err)
		}
		defer clear(secret)
	}
	loginAttempts.Add(1)
	err := t.p.Login(sh, pkcs11.CKU_CONTEXT_SPECIFIC, bytesAsString(secret))
	if err == nil {
		return nil
	}
	var rv ReturnValue
	errors.As(err, &rv)
	if rv == pkcs11.CKR_USER_TYPE_INVALID {
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
	k := kindOf(rv)
	if k != tokenerr.ErrPINIncorrect && k != tokenerr.ErrPINLocked && k != tokenerr.ErrPINExpired && k != tokenerr.ErrPINInvalid {
		k = tokenerr.ErrLoginFailed
	}
	flags := TokenFlags(0)
	if ti, err2 := t.p.GetTokenInfo(t.slotID); err2 == nil {
		flags = TokenFlags(ti.Flags)
	}
	if k == tokenerr.ErrPINIncorrect && flags.PINLocked() {
		k = tokenerr.ErrPINLocked
	}
	t.mu.Lock()
	if t.refused == nil {
		t.refused = &PINError{Kind: k, Code: rv, Flags: flags} // not attempted again
	}
	t.mu.Unlock()
	return &PINError{Kind: k, Code: rv, Flags: flags, Attempted: true}
}

// LoggedIn reports whether Login succeeded on this token and the token is
// still open.
func (t *Token) LoggedIn() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.loggedIn && !t.gate.closed()
}

// Login's guard (no PIN presented to a locked token or one on its final
// try) needs the token's PIN flags as they are just before C_Login. A
// C_GetTokenInfo that this Module made moments before, with no login
// attempt since, is as fresh as a second one, and on a network HSM a
// second one is a round trip: so the Module keeps the flags of each
// slot's last read for Login to take, once.

// flagsFreshFor is how long a C_GetTokenInfo's flags stand in for a new
// read: long enough for FindSlot, OpenSlot and Login in a row over a slow
// link, short enough that nothing a person does comes in between.
const flagsFreshFor = time.Second

// loginAttempts counts the C_Login calls this package made, on any
// module: a login attempt (ours, on any Token) may change the PIN flags,
// so flags read before one are never reused.
var loginAttempts atomic.Uint64

// seenFlags are a slot's token flags as C_GetTokenInfo gave them, when,
// and how many login attempts had been made then.
type seenFlags struct {
	flags    TokenFlags
	at       time.Time
	attempts uint64
}

// noteFlags records the flags just read (C_GetTokenInfo) of slot's token.
func (m *Module) noteFlags(slot uint, f TokenFlags) {
	m.seenMu.Lock()
	defer m.seenMu.Unlock()
	if m.seen == nil {
		m.seen = map[uint]seenFlags{}
	}
	m.seen[slot] = seenFlags{flags: f, at: time.Now(), attempts: loginAttempts.Load()}
}

// freshFlags returns, and forgets, the flags of slot's token when they
// were read less than flagsFreshFor ago and no login attempt was made
// since; otherwise ok is false and the caller reads them.
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

// PINFile returns a PINSource that reads the PIN from the file at path
// each time the token asks for it (at a login, and for keys with
// CKA_ALWAYS_AUTHENTICATE before each signature), so that nothing keeps the
// PIN between logins. The file must be a regular file of at most
// safefile.MaxPIN (1 KiB); one trailing newline (or CRLF) is trimmed. A file
// that cannot be read, is empty, or holds another control character is an
// error naming the path, never a PIN that spends a login attempt; so is a
// file that a user other than root and the program's own can change
// (safefile.ErrUnsafe). Keep it readable by the program's user alone
// (mp-hsm warns when group or others can read it). This is how mp-hsm's
// --pin-file reads the PIN.
func PINFile(path string) PINSource {
	return func() ([]byte, error) {
		pin, _, err := safefile.ReadSecret(path, safefile.MaxPIN)
		if err != nil {
			return nil, fmt.Errorf("PIN file %w", err)
		}
		return pin, nil
	}
}
