package daemon

import (
	"context"
	"slices"
	"sync"
)

// admission hands out the MaxConcurrent slots for exchanges so that one caller's
// cold requests cannot starve the others': a caller holds at most its share
// (MaxConcurrentPerCaller) even while slots are free; a free slot goes to the
// waiting caller that holds the fewest, round robin among equals, each caller's
// exchanges in order. offer moves a waiting exchange to another caller of the same
// key that could run it at once, so that a flooder cannot hold back a key others
// ask for by asking first. Background refreshes (refreshCaller) share every slot.
type admission struct {
	total, share int
	m            *metrics

	mu    sync.Mutex
	free  int
	held  map[callerID]int
	queue []*slotWaiter // the callers take turns in the order of their first waiters
}

type slotWaiter struct { // an exchange waiting for a slot, guarded by admission.mu
	ready   chan struct{} // closed when granted
	granted bool
	who     callerID // whose turn it waits in, and whose slot it gets
	key     any      // the exchange's *request, for offer; nil if none
}

func newAdmission(total, share int, m *metrics) *admission {
	return &admission{total: total, share: share, m: m, free: total, held: map[callerID]int{}}
}

// acquire takes a slot for who's exchange key, waiting its turn within ctx, and
// returns the caller whose slot it took, for release: who, or one offer chose.
func (a *admission) acquire(ctx context.Context, who callerID, key any) (callerID, error) {
	a.mu.Lock()
	if a.free > 0 && a.held[who] < a.shareOf(who) && a.waiters(who) == 0 {
		a.takeLocked(who)
		a.mu.Unlock()
		return who, nil
	}
	w := &slotWaiter{ready: make(chan struct{}), who: who, key: key}
	a.queue = append(a.queue, w)
	a.m.queued.Inc()
	a.mu.Unlock()
	var err error
	select {
	case <-w.ready:
	case <-ctx.Done():
		err = ctx.Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case err == nil:
	case w.granted: // granted as ctx ended: pass the slot on
		a.releaseLocked(w.who)
	default:
		a.removeLocked(w)
		a.m.queued.Dec()
	}
	return w.who, err
}

// offer moves the exchange key, waiting in another caller's turn, to who if who could run it at once.
func (a *admission) offer(key any, who callerID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	i := slices.IndexFunc(a.queue, func(w *slotWaiter) bool { return w.key == key })
	if i < 0 || a.queue[i].who == who || a.held[who] >= a.shareOf(who) || a.waiters(who) > 0 {
		return
	}
	w := a.queue[i]
	a.removeLocked(w)
	w.who = who
	a.queue = append(a.queue, w)
	a.dispatchLocked()
}

// release returns who's slot and grants free slots to waiters.
func (a *admission) release(who callerID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.releaseLocked(who)
}

func (a *admission) releaseLocked(who callerID) {
	if a.held[who]--; a.held[who] <= 0 {
		delete(a.held, who)
	}
	a.free++
	a.m.inflight.Dec()
	a.dispatchLocked()
}

// dispatchLocked grants free slots: each to the first waiter of the caller under
// its share that holds the fewest, whose other waiters then go last.
func (a *admission) dispatchLocked() {
	for a.free > 0 {
		i := -1
		for j, w := range a.queue {
			if h := a.held[w.who]; h < a.shareOf(w.who) && (i < 0 || h < a.held[a.queue[i].who]) {
				i = j
			}
		}
		if i < 0 {
			return // every waiting caller is at its share
		}
		w := a.queue[i]
		a.removeLocked(w)
		var next []*slotWaiter
		a.queue = slices.DeleteFunc(a.queue, func(o *slotWaiter) bool {
			if o.who == w.who {
				next = append(next, o)
			}
			return o.who == w.who
		})
		a.queue = append(a.queue, next...)
		a.m.queued.Dec()
		w.granted = true
		close(w.ready)
		a.takeLocked(w.who)
	}
}

// removeLocked takes w out of the queue; its caller's later waiters move up into
// their predecessors' places, so that the caller keeps its turn.
func (a *admission) removeLocked(w *slotWaiter) {
	i := slices.Index(a.queue, w)
	for k := i + 1; k < len(a.queue); k++ {
		if a.queue[k].who == w.who {
			a.queue[i], i = a.queue[k], k
		}
	}
	a.queue = slices.Delete(a.queue, i, i+1)
}

func (a *admission) waiters(who callerID) int {
	n := 0
	for _, w := range a.queue {
		if w.who == who {
			n++
		}
	}
	return n
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
