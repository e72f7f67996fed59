package hsm

import (
	"context"
)

// acquire returns a signing session, opening one when fewer than MaxSessions
// exist, and otherwise waiting for one to come back or for ctx to end. The
// caller is inside the token's gate, so Close waits for the session to come
// back.
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
// state unknown after an error: a new one is opened when needed). The
// caller is still inside the token's gate: Close closes the pool's sessions
// only once every call has left it.
func (t *Token) release(sh sessionHandle, broken bool) {
	if broken {
		t.discard(sh)
		return
	}
	t.pool <- sh // never blocks: at most cap(pool) sessions exist
}

// discard closes a signing session and frees its place.
func (t *Token) discard(sh sessionHandle) {
	_ = t.p.CloseSession(sh)
	<-t.slots
}
