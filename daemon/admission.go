package daemon

import (
	"context"
	"slices"
	"sync"
)

// admission hands out the MaxConcurrent slots for exchanges with
// Maskinporten and Altinn, so that one caller's cold requests cannot
// starve the others': a caller holds at most share slots at once
// (MaxConcurrentPerCaller), and a caller at its share waits for one of its
// own to end even while other slots are free. When slots are scarce,
// waiting callers are served in turn (round robin), and each caller's
// exchanges in the order they came. An exchange counts for the caller that
// added its key (request.owner), background refreshes included.
type admission struct {
	share int
	m     *metrics

	mu     sync.Mutex
	free   int
	held   map[callerID]int
	queues map[callerID][]*slotWaiter
	turn   []callerID // callers with waiters, next first
}

type slotWaiter struct {
	ready   chan struct{} // closed when granted
	granted bool          // under admission.mu
}

func newAdmission(total, share int, m *metrics) *admission {
	return &admission{share: share, m: m, free: total,
		held: map[callerID]int{}, queues: map[callerID][]*slotWaiter{}}
}

// acquire takes a slot for who, waiting for its turn as long as ctx
// allows.
func (a *admission) acquire(ctx context.Context, who callerID) error {
	a.mu.Lock()
	if a.free > 0 && a.held[who] < a.share && len(a.queues[who]) == 0 {
		a.takeLocked(who)
		a.mu.Unlock()
		return nil
	}
	w := &slotWaiter{ready: make(chan struct{})}
	if len(a.queues[who]) == 0 {
		a.turn = append(a.turn, who)
	}
	a.queues[who] = append(a.queues[who], w)
	a.m.queued.Inc()
	a.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	a.mu.Lock()
	if w.granted { // granted as ctx ended: pass the slot on
		a.mu.Unlock()
		a.release(who)
		return ctx.Err()
	}
	q := a.queues[who]
	if i := slices.Index(q, w); i >= 0 {
		q = slices.Delete(q, i, i+1)
		a.m.queued.Dec()
	}
	if len(q) == 0 {
		delete(a.queues, who)
		a.turn = slices.DeleteFunc(a.turn, func(c callerID) bool { return c == who })
	} else {
		a.queues[who] = q
	}
	a.mu.Unlock()
	return ctx.Err()
}

// release returns who's slot and grants free slots to the waiters whose
// turn it is.
func (a *admission) release(who callerID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.held[who]--; a.held[who] <= 0 {
		delete(a.held, who)
	}
	a.free++
	a.m.inflight.Dec()
	for a.free > 0 {
		i := slices.IndexFunc(a.turn, func(c callerID) bool { return a.held[c] < a.share })
		if i < 0 {
			return // every waiting caller is at its share
		}
		c := a.turn[i]
		q := a.queues[c]
		w := q[0]
		a.turn = slices.Delete(a.turn, i, i+1)
		if len(q) == 1 {
			delete(a.queues, c)
		} else {
			a.queues[c] = q[1:]
			a.turn = append(a.turn, c) // its next waiter goes after the others'
		}
		a.m.queued.Dec()
		w.granted = true
		close(w.ready)
		a.takeLocked(c)
	}
}

func (a *admission) takeLocked(who callerID) {
	a.held[who]++
	a.free--
	a.m.inflight.Inc()
}

// load returns the slots who holds and its exchanges waiting for one.
func (a *admission) load(who callerID) (held, waiting int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.held[who], len(a.queues[who])
}
