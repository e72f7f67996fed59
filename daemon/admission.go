package daemon

import (
	"context"
	"slices"
	"sync"
)

// admission hands out the MaxConcurrent slots for exchanges so that one
// caller's cold requests cannot starve the others': a caller holds at most
// share slots (MaxConcurrentPerCaller), even while others are free; a free
// slot goes to the waiting caller that holds the fewest, round robin among
// equals, each caller's exchanges in order. An exchange counts for the
// caller that started it while it runs. offer moves a waiting exchange to
// another caller of the same key that could run it at once, so that a
// flooder cannot hold back a key others ask for by asking first.
// Background refreshes count for refreshCaller, bounded by MaxConcurrent
// alone but taking turns like a caller.
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

// slotWaiter is an exchange waiting for a slot, guarded by admission.mu.
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

// acquire takes a slot for who's exchange key (nil if none can join it),
// waiting for its turn within ctx, and returns the caller whose slot it
// took, for release: who, or one that offer moved the exchange to.
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

// offer moves the exchange key, waiting in another caller's queue, to who
// if who could run it at once.
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

// release returns who's slot and grants free slots to waiters.
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

func (a *admission) canRunLocked(who callerID) bool {
	return a.free > 0 && a.held[who] < a.shareOf(who) && len(a.queues[who]) == 0
}

func (a *admission) enqueueLocked(w *slotWaiter) {
	if len(a.queues[w.who]) == 0 {
		a.turn = append(a.turn, w.who)
	}
	a.queues[w.who] = append(a.queues[w.who], w)
}

// dequeueLocked takes w out of its caller's queue, the turn and waiting.
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
