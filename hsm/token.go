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

// TokenOptions configures OpenToken. The zero value is ready to use.
type TokenOptions struct {
	// MaxSessions bounds the signing sessions opened in parallel. Zero
	// means the token's own limit less one (for the login session), capped
	// at twice GOMAXPROCS and at least one.
	MaxSessions int
	// ReadWrite opens read-write sessions. The default is read-only, which
	// qualified cards that refuse read-write sessions also accept.
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

	mu      sync.Mutex // serialises use of loginSH (object searches, login) and guards the fields below
	loginSH sessionHandle
	pin     PINSource // kept for CKU_CONTEXT_SPECIFIC logins
	// refused is the context login's refusal, once one failed: the PIN is
	// not presented again on this Token (see contextLogin).
	refused  error
	loggedIn bool
	// noContextLogin is set once the module answered a context login with
	// CKR_USER_TYPE_INVALID (see contextLogin).
	noContextLogin bool
	// certs are the token's certificates, read once (see certificates);
	// nil until read, and again after a Login, which may show more.
	certs []Certificate

	pool    chan sessionHandle // idle signing sessions
	slots   chan struct{}      // one per session that exists
	maxSess int
}

// OpenToken opens the token in slotID: one session that holds the login
// state and serves object searches, and, lazily, up to MaxSessions signing
// sessions.
func (m *Module) OpenToken(slotID uint, opts TokenOptions) (*Token, error) {
	if err := m.enter("open token"); err != nil {
		return nil, err
	}
	defer m.gate.leave()
	ti, err := m.p.GetTokenInfo(slotID)
	if errors.Is(err, ReturnValue(pkcs11.CKR_TOKEN_NOT_PRESENT)) {
		return nil, &Error{Op: fmt.Sprintf("open token in slot %d", slotID), Kind: tokenerr.ErrNoToken, Code: pkcs11.CKR_TOKEN_NOT_PRESENT}
	} else if err != nil {
		return nil, wrap(fmt.Sprintf("C_GetTokenInfo(slot %d)", slotID), err)
	}
	m.noteFlags(slotID, TokenFlags(ti.Flags))
	return m.openToken(slotID, tokenInfo(ti), opts)
}

// OpenSlot opens the token of s, a Slot that FindSlot or Slots returned,
// like OpenToken but with no C_GetTokenInfo call of its own. A Slot without
// token information gives tokenerr.ErrNoToken.
func (m *Module) OpenSlot(s Slot, opts TokenOptions) (*Token, error) {
	if err := m.enter("open token"); err != nil {
		return nil, err
	}
	defer m.gate.leave()
	if s.Token == nil {
		return nil, &Error{Op: fmt.Sprintf("open token in slot %d", s.ID), Kind: tokenerr.ErrNoToken, Detail: "the slot showed no token"}
	}
	return m.openToken(s.ID, s.Token, opts)
}

// openToken opens a token whose information ti was just read. The caller
// is inside m.gate.
func (m *Module) openToken(slotID uint, ti *TokenInfo, opts TokenOptions) (*Token, error) {
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
		// The token's limit less the login session, compared as uint: a
		// module may report a count that int would make negative
		// (opencryptoki 3.8.1 reports 2^64-2).
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
		pool: make(chan sessionHandle, n), slots: make(chan struct{}, n), maxSess: n}
	m.tokMu.Lock()
	m.tokens[t] = struct{}{}
	m.tokMu.Unlock()
	return t, nil
}

// enter counts a call on the token in, into the token's gate and then the
// module's, or returns tokenerr.ErrClosed for op when either is closed.
// Every successful enter is paired with t.leave().
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

// SlotID returns the slot the token is in.
func (t *Token) SlotID() uint { return t.slotID }

// MaxSessions returns how many signing sessions may run in parallel.
func (t *Token) MaxSessions() int { return t.maxSess }

// Info reads the token's information afresh (C_GetTokenInfo), for instance
// to see its PIN flags.
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

// Check asks the module whether the token is still there and the login
// still holds, without signing and without a PIN: C_GetSlotInfo (is
// CKF_TOKEN_PRESENT set?) and C_GetSessionInfo on the login session. Unlike
// C_GetTokenInfo, which OpenSC answers from its cache while the card is
// away, both reach the reader or the HSM. A removed token gives
// tokenerr.ErrTokenRemoved, a closed session ErrSessionClosed, a lost login
// ErrNotLoggedIn, a dead link or device ErrDevice: all Transient.
func (t *Token) Check() error {
	if err := t.enter("check token"); err != nil {
		return err
	}
	defer t.leave()
	op := fmt.Sprintf("C_GetSlotInfo(slot %d)", t.slotID)
	si, err := t.p.GetSlotInfo(t.slotID)
	if err != nil {
		return wrap(op, err)
	}
	if si.Flags&pkcs11.CKF_TOKEN_PRESENT == 0 {
		return &Error{Op: op, Kind: tokenerr.ErrTokenRemoved, Detail: "the slot says no token is present"}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ss, err := t.p.GetSessionInfo(t.loginSH)
	if err != nil {
		return wrap("C_GetSessionInfo", err)
	}
	if t.loggedIn && ss.State != pkcs11.CKS_RO_USER_FUNCTIONS && ss.State != pkcs11.CKS_RW_USER_FUNCTIONS {
		return &Error{Op: "C_GetSessionInfo", Kind: tokenerr.ErrNotLoggedIn, Detail: fmt.Sprintf("the session lost its login (state %d)", ss.State)}
	}
	return nil
}

// Close closes every session of the token, which ends its login. It waits
// for the calls in flight on the token and its keys (a signature under way
// finishes); later calls return tokenerr.ErrClosed. It does not close the
// Module. Close is idempotent; it must not be called from a PINSource.
func (t *Token) Close() error {
	if !t.gate.close() {
		return nil
	}
	if !t.m.gate.enter() {
		return nil // the module is closing, and closes this token's sessions
	}
	defer t.m.gate.leave()
	// Forgotten before the sessions are closed, inside the module's gate:
	// Module.Close, which waits for this, will not close them again.
	t.m.tokMu.Lock()
	delete(t.m.tokens, t)
	t.m.tokMu.Unlock()
	return t.closeSessions()
}

// dropSessions forgets the token's login and sessions, closing the idle
// signing sessions when closeIdle (Module.Close instead closes every session
// of the slot in one call), and returns the login session. The token's gate
// is closed and drained, so every signing session is back in the pool.
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

// closeSessions closes the idle signing sessions and the login session. The
// token's gate is closed and drained.
func (t *Token) closeSessions() error {
	if t.m.gone() {
		// Finalised under this token: its sessions went with the module, and
		// their handles may now be another's.
		t.dropSessions(false)
		return nil
	}
	err := t.p.CloseSession(t.dropSessions(true))
	if errors.Is(err, ReturnValue(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)) {
		// Finalised by other code: the sessions are gone already, which is
		// what Close wants. Nothing of this load is used again.
		if t.m.lib != nil {
			t.m.lib.gone.Store(true)
		}
		return nil
	}
	return wrap("C_CloseSession", err)
}

// acquire returns a signing session, opening one when fewer than MaxSessions
// exist, and otherwise waiting for one to come back or for ctx to end. The
// caller is inside the token's gate, so Close waits for the session.
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

// release gives a session back to the pool, or closes it when broken (its
// state unknown after an error; a new one is opened when needed). The
// caller is still inside the token's gate.
func (t *Token) release(sh sessionHandle, broken bool) {
	if broken {
		_ = t.p.CloseSession(sh)
		<-t.slots
		return
	}
	t.pool <- sh // never blocks: at most cap(pool) sessions exist
}

// gate is the closed state of a Module or Token and the count of calls in
// flight through it. Every exported method that reaches the module enters
// the gate first and leaves when the module has answered; Close shuts the
// gate and waits for the calls in flight, so that sessions are closed and
// the module finalised only when no call uses them. A counter, not a
// sync.RWMutex: a method in flight may enter again (FindSlot lists the
// slots), which an RWMutex would deadlock once a Close waits; here the
// second entry fails with tokenerr.ErrClosed. The zero gate is open.
type gate struct {
	mu      sync.Mutex
	shut    bool
	busy    int
	drained chan struct{} // made by close while busy > 0; closed when busy reaches 0
}

// enter counts a call in, or reports false once the gate is shut.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.shut {
		g.busy++
	}
	return !g.shut
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.busy--
	if g.busy == 0 && g.drained != nil {
		close(g.drained)
		g.drained = nil
	}
}

// close shuts the gate and waits until every call in flight has left. It
// reports whether this call shut it (it waits either way). A goroutine must
// not close a gate it is inside.
func (g *gate) close() (first bool) {
	g.mu.Lock()
	first = !g.shut
	g.shut = true
	var wait chan struct{}
	if g.busy > 0 {
		if g.drained == nil {
			g.drained = make(chan struct{})
		}
		wait = g.drained
	}
	g.mu.Unlock()
	if wait != nil {
		<-wait
	}
	return first
}

func (g *gate) closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shut
}
