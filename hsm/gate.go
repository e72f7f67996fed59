package hsm

import "sync"

// gate is the closed state of a Module or Token and the count of calls in
// flight through it. Every exported method that reaches the PKCS#11 module
// enters the gate first and leaves it when the module has answered; Close
// shuts the gate and waits until the calls in flight have left, so that
// sessions are closed and C_Finalize and the unloading of the module run
// only when no call is using them.
//
// A counter, not a sync.RWMutex: a method in flight may enter again (FindSlot
// lists the slots), and an RWMutex would deadlock that second entry once a
// Close is waiting. With the gate the second entry simply fails with
// tokenerr.ErrClosed.
//
// The zero gate is open.
type gate struct {
	mu      sync.Mutex
	shut    bool
	busy    int
	drained chan struct{} // made by close while busy > 0; closed when busy reaches 0
}

// enter counts a call in. It reports false, and counts nothing, once the
// gate is shut.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut {
		return false
	}
	g.busy++
	return true
}

// leave counts a call out.
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
// reports whether this call shut it (false when it was shut already; it
// still waits then). A goroutine must not close a gate it is inside.
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

// closed reports whether the gate is shut.
func (g *gate) closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shut
}
