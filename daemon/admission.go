package daemon

import (
	"context"
	"slices"
	"sync"
)

// admission hands out the MaxConcurrent slots for exchanges with
// Maskinporten and Altinn, so that one caller's cold requests cannot
// starve the others':
//
//   - a caller holds at most share slots at once (MaxConcurrentPerCaller);
//     at its share, it waits for one of its own exchanges to end even
//     while other slots are free;
//   - a slot that comes free goes to the waiting caller that holds the
//     fewest, and among equals to the one whose turn it is (round robin);
//     each caller's exchanges go in the order they came.
//
// An exchange counts for the caller whose request started it, for as long
// as it runs, even if that caller hangs up. Callers that ask for the same
// key meanwhile wait for the same exchange: if one of them could run it
// at once (it is under its share with nothing waiting), offer moves the
// exchange to it, so that a flooder cannot hold back a key that others
// ask for by asking for it first. Background refreshes count for
// refreshCaller, which is bounded by MaxConcurrent alone but takes its
// turn like a caller: they use the slots nobody else waits for, and a
// caller's cold request gets the next slot that comes free.
type admission struct {
	total int // MaxConcurrent
	share int // MaxConcurrentPerCaller
	m     *metrics

	mu      sync.Mutex
	free    int
	held    map[callerID]int
	queues  map[callerID][]*slotWaiter
	turn    []callerID          // callers with waiters, next first
	waiting map[any]*slotWaiter // by the exchange's key (its *request)
}

// slotWaiter is an exchange waiting for a slot. Its fields are guarded by
// admission.mu.
type slotWaiter struct {
	ready   chan struct{} // closed when granted
	granted bool
	who     callerID // whose queue it is in, and whose slot it gets
	key     any
}

func newAdmission(total, share int, m *metrics) *admission {
	return &admission{total: total, share: share, m: m, free: total, held: map[callerID]int{},
		queues: map[callerID][]*slotWaiter{}, waiting: map[any]*slotWaiter{}}
}

// acquire takes a slot for who's exchange key (comparable; nil for an
// exchange nobody else can join), waiting for its turn as long as ctx
// allows, and returns the caller whose slot it took, for release: who, or
// a caller that offer moved the exchange to.
func (a *admission) acquire(ctx context.Context, who callerID, key any) (callerID, error) {
	a.mu.Lock()
	if a.canRunLocked(who) {
		a.takeLocked(who)
		a.mu.Unlock()
		return who, nil
	}
	w := &slotWaiter{ready: make(chan struct{}), who: who, key: key}
	a.enqueueLocked(w)
	if key != nil {
		a.waiting[key] = w
	}
	a.m.queued.Inc()
	a.mu.Unlock()

	select {
	case <-w.ready:
		a.mu.Lock()
		who = w.who
		a.mu.Unlock()
		return who, nil
	case <-ctx.Done():
	}
	a.mu.Lock()
	who = w.who
	if w.granted { // granted as ctx ended: pass the slot on
		a.mu.Unlock()
		a.release(who)
		return who, ctx.Err()
	}
	a.dequeueLocked(w)
	a.m.queued.Dec()
	a.mu.Unlock()
	return who, ctx.Err()
}

// offer tells that who waits for the exchange key too: if it waits for a
// slot in another caller's queue and who could run it at once, it moves
// to who and runs.
func (a *admission) offer(key any, who callerID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.waiting[key]
	if w == nil || w.who == who || a.held[who] >= a.shareOf(who) || len(a.queues[who]) > 0 {
		return
	}
	a.dequeueLocked(w)
	w.who = who
	a.enqueueLocked(w)
	a.waiting[key] = w
	a.dispatchLocked()
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
	a.dispatchLocked()
}

// dispatchLocked grants free slots to waiters: each to the waiting caller
// under its share that holds the fewest, the first in turn among equals.
func (a *admission) dispatchLocked() {
	for a.free > 0 {
		i := -1
		for j, c := range a.turn {
			if h := a.held[c]; h < a.shareOf(c) && (i < 0 || h < a.held[a.turn[i]]) {
				i = j
			}
		}
		if i < 0 {
			return // every waiting caller is at its share
		}
		c := a.turn[i]
		w := a.queues[c][0]
		a.dequeueLocked(w)
		if len(a.queues[c]) > 0 { // still in turn at i: its next waiter goes after the others'
			a.turn = append(slices.Delete(a.turn, i, i+1), c)
		}
		a.m.queued.Dec()
		w.granted = true
		close(w.ready)
		a.takeLocked(c)
	}
}

// canRunLocked reports whether an exchange of who may take a slot now.
func (a *admission) canRunLocked(who callerID) bool {
	return a.free > 0 && a.held[who] < a.shareOf(who) && len(a.queues[who]) == 0
}

// enqueueLocked puts w at the end of its caller's queue.
func (a *admission) enqueueLocked(w *slotWaiter) {
	if len(a.queues[w.who]) == 0 {
		a.turn = append(a.turn, w.who)
	}
	a.queues[w.who] = append(a.queues[w.who], w)
}

// dequeueLocked takes w out of its caller's queue (and of the turn, if it
// was the caller's last) and out of waiting.
func (a *admission) dequeueLocked(w *slotWaiter) {
	q := a.queues[w.who]
	if i := slices.Index(q, w); i >= 0 {
		q = slices.Delete(q, i, i+1)
	}
	if len(q) == 0 {
		delete(a.queues, w.who)
		a.turn = slices.DeleteFunc(a.turn, func(c callerID) bool { return c == w.who })
	} else {
		a.queues[w.who] = q
	}
	if w.key != nil && a.waiting[w.key] == w {
		delete(a.waiting, w.key)
	}
}

// shareOf is the most slots who may hold.
func (a *admission) shareOf(who callerID) int {
	if who.refresh {
		return a.total
	}
	return a.share
}

func (a *admission) takeLocked(who callerID) {
	a.held[who]++
	a.free--
	a.m.inflight.Inc()
}
