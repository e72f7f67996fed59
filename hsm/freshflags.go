package hsm

import (
	"sync/atomic"
	"time"
)

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
