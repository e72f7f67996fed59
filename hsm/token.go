package hsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/miekg/pkcs11"
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

// TokenOptions configures OpenToken. The zero value is ready to use.
type TokenOptions struct {
	// MaxSessions bounds the signing sessions opened in parallel. Zero
	// means the token's own limit less one (for the login session), capped
	// at twice GOMAXPROCS and at least one.
	MaxSessions int
	// ReadWrite opens read-write sessions. mp-hsm only reads and signs, so
	// the default is read-only, which qualified cards that refuse
	// read-write sessions also accept.
	ReadWrite bool
	// Logger receives warnings, such as a low PIN count. Nil discards them.
	// Nothing secret is ever logged.
	Logger *slog.Logger
}

// Token is an open token: a login session, a pool of signing sessions, and
// the login state. Close it when done. Safe for concurrent use.
type Token struct {
	m      *Module
	p      p11
	slotID uint
	flags  uint // session flags
	log    *slog.Logger

	mu      sync.Mutex // guards loginSH use (object searches, login) and the fields below
	loginSH pkcs11.SessionHandle
	closed  bool
	pin     PINSource // kept for CKU_CONTEXT_SPECIFIC logins
	// refused is the context login's refusal, once one failed: the PIN
	// is not presented again on this Token (see contextLogin).
	refused  error
	loggedIn bool

	pool       chan pkcs11.SessionHandle // idle signing sessions
	slots      chan struct{}             // one per session that exists
	poolMu     sync.Mutex
	poolClosed bool
	isClosed   atomic.Bool
	maxSess    int
}

// OpenToken opens the token in slotID: one session that holds the login
// state and serves object searches, and, lazily, up to MaxSessions signing
// sessions.
func (m *Module) OpenToken(slotID uint, opts TokenOptions) (*Token, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	ti, err := m.p.GetTokenInfo(slotID)
	if err != nil {
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_TOKEN_NOT_PRESENT)) {
			return nil, &Error{Op: fmt.Sprintf("open token in slot %d", slotID), Kind: ErrNoToken, Code: pkcs11.CKR_TOKEN_NOT_PRESENT}
		}
		return nil, wrap(fmt.Sprintf("C_GetTokenInfo(slot %d)", slotID), err)
	}
	flags := uint(pkcs11.CKF_SERIAL_SESSION)
	if opts.ReadWrite {
		flags |= pkcs11.CKF_RW_SESSION
	}
	sh, err := m.p.OpenSession(slotID, flags)
	if err != nil {
		return nil, wrap(fmt.Sprintf("C_OpenSession(slot %d)", slotID), err)
	}
	n := opts.MaxSessions
	if n <= 0 {
		n = 2 * runtime.GOMAXPROCS(0)
		if max := tokenInfo(ti).MaxSessions; max > 1 && int(max)-1 < n {
			n = int(max) - 1
		}
	}
	if n < 1 {
		n = 1
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	t := &Token{
		m: m, p: m.p, slotID: slotID, flags: flags, log: log,
		loginSH: sh,
		pool:    make(chan pkcs11.SessionHandle, n),
		slots:   make(chan struct{}, n),
		maxSess: n,
	}
	return t, nil
}

// SlotID returns the slot the token is in.
func (t *Token) SlotID() uint { return t.slotID }

// MaxSessions returns how many signing sessions may run in parallel.
func (t *Token) MaxSessions() int { return t.maxSess }

// Info reads the token's information afresh (C_GetTokenInfo), for instance
// to see its PIN flags.
func (t *Token) Info() (TokenInfo, error) {
	ti, err := t.p.GetTokenInfo(t.slotID)
	if err != nil {
		return TokenInfo{}, wrap("C_GetTokenInfo", err)
	}
	return *tokenInfo(ti), nil
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
// reads the token flags first and
//   - does nothing when the token needs no login;
//   - refuses, without presenting the PIN, when the PIN is locked
//     (ErrPINLocked) or on its final try (ErrPINFinalTry, unless
//     opts.AllowFinalTry);
//   - logs a warning when the token reports a low PIN count;
//   - calls pin once and C_Login exactly once, and never again on its own:
//     a wrong PIN returns a *PINError (ErrPINIncorrect) with the token's
//     flags as read after the attempt.
//
// The PIN bytes are zeroed after C_Login. The PIN source is kept for keys
// with CKA_ALWAYS_AUTHENTICATE, which need the PIN again before each
// signature.
func (t *Token) Login(pin PINSource, opts LoginOptions) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return &Error{Op: "login", Kind: ErrClosed}
	}
	ti, err := t.p.GetTokenInfo(t.slotID)
	if err != nil {
		return wrap("C_GetTokenInfo", err)
	}
	flags := TokenFlags(ti.Flags)
	if !flags.LoginRequired() {
		t.loggedIn = true
		return nil
	}
	if flags.PINLocked() {
		return &PINError{Kind: ErrPINLocked, Flags: flags}
	}
	if flags.PINFinalTry() && !opts.AllowFinalTry {
		return &PINError{Kind: ErrPINFinalTry, Flags: flags}
	}
	if flags.PINCountLow() {
		t.log.Warn("the token reports a low PIN count: a wrong PIN was entered since the last login", "slot", t.slotID)
	}
	if pin == nil && !flags.ProtectedAuthPath() {
		pin = opts.Prompt
	}
	var secret []byte
	if pin != nil {
		secret, err = pin()
		if err != nil {
			return fmt.Errorf("login: reading the PIN: %w", err)
		}
		defer clear(secret)
	}
	if len(secret) == 0 && !flags.ProtectedAuthPath() {
		return &PINError{Kind: ErrPINRequired, Flags: flags}
	}
	err = t.p.Login(t.loginSH, pkcs11.CKU_USER, bytesAsString(secret))
	if err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		var rv pkcs11.Error
		errors.As(err, &rv)
		kind := kindOf(rv)
		if kind == ErrPINIncorrect || kind == ErrPINLocked || kind == ErrPINExpired || kind == ErrPINInvalid {
			after := flags
			if ti2, err2 := t.p.GetTokenInfo(t.slotID); err2 == nil {
				after = TokenFlags(ti2.Flags)
			}
			if kind == ErrPINIncorrect && after.PINLocked() {
				kind = ErrPINLocked
			}
			return &PINError{Kind: kind, Code: rv, Flags: after, Attempted: true}
		}
		// Any other refusal may still have counted a wrong PIN: some
		// drivers report one as CKR_FUNCTION_FAILED or CKR_DEVICE_ERROR.
		// It is a refused login too, never a fault to log in again after.
		return &PINError{Kind: ErrLoginFailed, Code: rv, Flags: flags, Attempted: true}
	}
	t.loggedIn = true
	t.pin = pin
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
func (t *Token) contextLogin(sh pkcs11.SessionHandle) error {
	t.mu.Lock()
	src, refused := t.pin, t.refused
	t.mu.Unlock()
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
	err := t.p.Login(sh, pkcs11.CKU_CONTEXT_SPECIFIC, bytesAsString(secret))
	if err == nil {
		return nil
	}
	var rv pkcs11.Error
	errors.As(err, &rv)
	k := kindOf(rv)
	if k != ErrPINIncorrect && k != ErrPINLocked && k != ErrPINExpired && k != ErrPINInvalid {
		k = ErrLoginFailed
	}
	flags := TokenFlags(0)
	if ti, err2 := t.p.GetTokenInfo(t.slotID); err2 == nil {
		flags = TokenFlags(ti.Flags)
	}
	if k == ErrPINIncorrect && flags.PINLocked() {
		k = ErrPINLocked
	}
	pe := &PINError{Kind: k, Code: rv, Flags: flags, Attempted: true}
	t.mu.Lock()
	if t.refused == nil {
		t.refused = &PINError{Kind: k, Code: rv, Flags: flags} // not attempted again
	}
	t.mu.Unlock()
	return pe
}

// LoggedIn reports whether Login succeeded on this token.
func (t *Token) LoggedIn() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.loggedIn
}

// acquire returns a signing session, opening one when fewer than MaxSessions
// exist, and otherwise waiting for one to come back or for ctx to end.
func (t *Token) acquire(ctx context.Context) (pkcs11.SessionHandle, error) {
	if t.isClosed.Load() {
		return 0, &Error{Op: "sign", Kind: ErrClosed}
	}
	select {
	case sh := <-t.pool:
		return sh, nil
	default:
	}
	select {
	case sh := <-t.pool:
		return sh, nil
	case t.slots <- struct{}{}:
		sh, err := t.p.OpenSession(t.slotID, t.flags)
		if err != nil {
			<-t.slots
			return 0, wrap("C_OpenSession", err)
		}
		return sh, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// brokenSession reports whether err shows the session unusable.
func brokenSession(err error) bool {
	return err != nil && (errors.Is(err, ErrSessionClosed) || errors.Is(err, ErrTokenRemoved) || errors.Is(err, ErrDevice))
}

// release gives a session back to the pool, or closes it when broken.
func (t *Token) release(sh pkcs11.SessionHandle, broken bool) {
	if broken {
		t.discard(sh)
		return
	}
	t.poolMu.Lock()
	defer t.poolMu.Unlock()
	if t.poolClosed {
		_ = t.p.CloseSession(sh)
		<-t.slots
		return
	}
	t.pool <- sh // never blocks: at most cap(pool) sessions exist
}

func (t *Token) discard(sh pkcs11.SessionHandle) {
	_ = t.p.CloseSession(sh)
	<-t.slots
}

// Close closes every session of the token, which ends its login. It does
// not close the Module. Close is idempotent.
func (t *Token) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.isClosed.Store(true)
	t.pin = nil
	t.loggedIn = false
	sh := t.loginSH
	t.mu.Unlock()

	t.poolMu.Lock()
	t.poolClosed = true
	for idle := true; idle; {
		select {
		case s := <-t.pool:
			t.discard(s)
		default:
			idle = false
		}
	}
	t.poolMu.Unlock()
	// Sessions in use are closed by release when they come back.
	return wrap("C_CloseSession", t.p.CloseSession(sh))
}
