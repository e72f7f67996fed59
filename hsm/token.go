package hsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// TokenOptions configures OpenSlot. The zero value is ready to use.
type TokenOptions struct {
	// MaxSessions bounds the signing sessions opened in parallel. Zero
	// means the token's own limit less one (for the login session), capped
	// at twice GOMAXPROCS and at least one.
	MaxSessions int
	// ReadWrite opens read-write sessions; some qualified cards refuse them.
	ReadWrite bool
	// Logger receives warnings, such as a low PIN count. Nil discards them.
	// Nothing secret is ever logged.
	Logger *slog.Logger
}

// Token is an open token: a login session, a pool of signing sessions, and
// the login state. Close it when done; closing its Module closes it too.
// Safe for concurrent use.
type Token struct {
	m      *Module
	p      p11
	slotID uint
	flags  uint // session flags
	log    *slog.Logger
	gate   gate // the token's closed state; counts the calls in flight on it and its keys

	ctxLogin sync.Mutex // one context login at a time, so a refusal is seen before the next PIN

	mu             sync.Mutex // serialises use of loginSH (object searches, login) and guards the fields below
	loginSH        sessionHandle
	pin            PINSource // kept for CKU_CONTEXT_SPECIFIC logins
	refused        error     // the context login's first refusal (see contextLogin)
	loggedIn       bool
	noContextLogin bool          // the module knows no context login (see contextLogin)
	certs          []Certificate // read once (see certificates); nil until read

	pool  chan sessionHandle // idle signing sessions
	slots chan struct{}      // one per session that exists
}

// OpenSlot opens the token of s: one session for the login and searches
// and, lazily, up to MaxSessions signing sessions. With s.Token (a Slot
// that FindSlot or Slots returned) it calls nothing more; Slot{ID: id}
// opens the token in slot id after reading its information afresh (a slot
// without a token gives tokenerr.ErrNoToken).
func (m *Module) OpenSlot(s Slot, opts TokenOptions) (*Token, error) {
	if err := m.enter("open token"); err != nil {
		return nil, err
	}
	defer m.gate.leave()
	slotID, ti := s.ID, s.Token
	if ti == nil {
		info, err := m.p.GetTokenInfo(slotID)
		if errors.Is(err, ReturnValue(pkcs11.CKR_TOKEN_NOT_PRESENT)) {
			return nil, &Error{Op: fmt.Sprintf("open token in slot %d", slotID), Kind: tokenerr.ErrNoToken, Code: pkcs11.CKR_TOKEN_NOT_PRESENT}
		} else if err != nil {
			return nil, wrap(fmt.Sprintf("C_GetTokenInfo(slot %d)", slotID), err)
		}
		ti = tokenInfo(info)
		m.noteFlags(slotID, ti.Flags)
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
		// Compared as uint: opencryptoki 3.8.1 reports 2^64-2 sessions.
		if max := ti.MaxSessions; max > 1 && max-1 < uint(n) {
			n = int(max - 1)
		}
	}
	n = max(n, 1)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Token{m: m, p: m.p, slotID: slotID, flags: flags, log: log, loginSH: sh,
		pool: make(chan sessionHandle, n), slots: make(chan struct{}, n)}
	m.tokMu.Lock()
	m.tokens[t] = struct{}{}
	m.tokMu.Unlock()
	return t, nil
}

// enter counts a call in through the token's gate and the module's, or
// returns tokenerr.ErrClosed for op. Every successful enter is paired with
// t.leave().
func (t *Token) enter(op string) error {
	if !t.gate.enter() {
		return &Error{Op: op, Kind: tokenerr.ErrClosed, Detail: "the token was closed"}
	}
	if err := t.m.enter(op); err != nil {
		t.gate.leave()
		return err
	}
	return nil
}

func (t *Token) leave() {
	t.m.gate.leave()
	t.gate.leave()
}

// locked runs f inside the gates with t.mu held. For a write it first
// checks that the token can be written to (read-write, logged in).
func (t *Token) locked(op string, write bool, f func() error) error {
	if err := t.enter(op); err != nil {
		return err
	}
	defer t.leave()
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case !write:
	case t.flags&pkcs11.CKF_RW_SESSION == 0:
		return &Error{Op: op, Kind: ErrReadOnly, Detail: "open the token with TokenOptions.ReadWrite"}
	case !t.loggedIn:
		return &Error{Op: op, Kind: tokenerr.ErrNotLoggedIn, Detail: "log in before writing to the token"}
	}
	return f()
}

// MaxSessions returns how many signing sessions may run in parallel.
func (t *Token) MaxSessions() int { return cap(t.pool) }

// Info reads the token's information afresh (C_GetTokenInfo).
func (t *Token) Info() (TokenInfo, error) {
	if err := t.enter("token info"); err != nil {
		return TokenInfo{}, err
	}
	defer t.leave()
	ti, err := t.p.GetTokenInfo(t.slotID)
	if err != nil {
		return TokenInfo{}, wrap("C_GetTokenInfo", err)
	}
	return *tokenInfo(ti), nil
}

// Check asks, with no signature and no PIN, whether the token is still there
// and the login holds: C_GetSlotInfo and C_GetSessionInfo reach the reader
// (OpenSC answers C_GetTokenInfo from a cache). It returns tokenerr's
// ErrTokenRemoved, ErrSessionClosed, ErrNotLoggedIn or ErrDevice: all Transient.
func (t *Token) Check() error {
	return t.locked("check token", false, func() error {
		op := fmt.Sprintf("C_GetSlotInfo(slot %d)", t.slotID)
		if si, err := t.p.GetSlotInfo(t.slotID); err != nil {
			return wrap(op, err)
		} else if si.Flags&pkcs11.CKF_TOKEN_PRESENT == 0 {
			return &Error{Op: op, Kind: tokenerr.ErrTokenRemoved, Detail: "the slot says no token is present"}
		}
		ss, err := t.p.GetSessionInfo(t.loginSH)
		if err != nil {
			return wrap("C_GetSessionInfo", err)
		}
		if t.loggedIn && ss.State != pkcs11.CKS_RO_USER_FUNCTIONS && ss.State != pkcs11.CKS_RW_USER_FUNCTIONS {
			return &Error{Op: "C_GetSessionInfo", Kind: tokenerr.ErrNotLoggedIn, Detail: fmt.Sprintf("the session lost its login (state %d)", ss.State)}
		}
		return nil
	})
}

// Close closes the token's sessions, which ends its login, after the calls
// in flight (a signature under way finishes); later calls return
// tokenerr.ErrClosed. It is idempotent and must not be called from a
// PINSource. The Module stays open.
func (t *Token) Close() error {
	if !t.gate.close() {
		return nil
	}
	if !t.m.gate.enter() {
		return nil // the module is closing, and closes this token's sessions
	}
	defer t.m.gate.leave()
	// Forgotten inside the module's gate: Module.Close will not close them.
	t.m.tokMu.Lock()
	delete(t.m.tokens, t)
	t.m.tokMu.Unlock()
	return t.closeSessions()
}

// dropSessions forgets the login and sessions, closing the signing
// sessions when closeIdle, and returns the login session. The token's gate
// is closed and drained: every signing session is in the pool.
func (t *Token) dropSessions(closeIdle bool) sessionHandle {
	t.mu.Lock()
	t.pin, t.loggedIn, t.certs = nil, false, nil
	sh := t.loginSH
	t.mu.Unlock()
	for {
		select {
		case s := <-t.pool:
			if closeIdle {
				_ = t.p.CloseSession(s)
			}
			<-t.slots
		default:
			return sh
		}
	}
}

// closeSessions closes the token's sessions; its gate is closed and drained.
func (t *Token) closeSessions() error {
	if t.m.lib.gone.Load() {
		// Finalised: the sessions went with it; their handles may be another's.
		t.dropSessions(false)
		return nil
	}
	err := t.p.CloseSession(t.dropSessions(true))
	if errors.Is(err, ReturnValue(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)) {
		// Finalised by other code: the sessions are gone already.
		t.m.lib.gone.Store(true)
		return nil
	}
	return wrap("C_CloseSession", err)
}

// acquire returns a pooled signing session, opens one when fewer than
// MaxSessions exist, or waits for one or for ctx. The caller is inside the
// token's gate, so Close waits for the session.
func (t *Token) acquire(ctx context.Context) (sessionHandle, error) {
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

// release gives a session back to the pool, or closes it when broken.
func (t *Token) release(sh sessionHandle, broken bool) {
	if broken {
		_ = t.p.CloseSession(sh)
		<-t.slots
		return
	}
	t.pool <- sh // never blocks: at most cap(pool) sessions exist
}

// gate is the closed state of a Module or Token and the calls in flight
// through it, so that Close closes sessions and finalises only when no call
// uses them. Not a sync.RWMutex: a method in flight may enter again
// (FindSlot lists the slots), which an RWMutex would deadlock once a Close
// waits; here the second entry fails. The zero gate is open.
type gate struct {
	mu    sync.Mutex
	shut  bool
	calls sync.WaitGroup // Add only before shut, under mu: Wait never races an Add from zero
}

// enter counts a call in, or reports false once the gate is shut.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.shut {
		g.calls.Add(1)
	}
	return !g.shut
}

func (g *gate) leave() { g.calls.Done() }

// close shuts the gate, waits for the calls in flight, and reports whether
// this call shut it. A goroutine must not close a gate it is inside.
func (g *gate) close() (first bool) {
	g.mu.Lock()
	first, g.shut = !g.shut, true
	g.mu.Unlock()
	g.calls.Wait()
	return first
}

func (g *gate) closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shut
}
