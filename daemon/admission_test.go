package daemon

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestFairShareOfUpstreamSlots: one caller's flood of cold requests to a
// slow Maskinporten holds at most its share (MaxConcurrent 4: 2) of the
// slots; another caller's cold request is admitted at once, while the
// flood still has requests waiting, and is answered in the flood's first
// round. Before, the flood took all 4 slots (issue 10: a legitimate cold
// request went from 2 s to 21.5 s behind 40 junk ones), and the other
// caller was answered only after 4 of the flood's requests.
func TestFairShareOfUpstreamSlots(t *testing.T) {
	t.Parallel()
	f := newDefFixture(t, func(c *Config) { c.MaxConcurrent = 4 })
	const latency = 700 * time.Millisecond
	f.emu.SetLatency(latency)
	flooder, other := unixPeer(1001), unixPeer(1002)
	a, b := callerID{unix: true, uid: 1001}, callerID{unix: true, uid: 1002}

	var mu sync.Mutex
	var order []string // who was answered, in order
	answered := func(who string, ans defAnswer) {
		if ans.Status != http.StatusOK {
			t.Errorf("%s: %s", who, ans)
		}
		mu.Lock()
		order = append(order, who)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() { answered("flood", f.ask(flooder, tokenForm(fmt.Sprintf("test:s%d", i)))) })
	}
	waitUntil(t, "the flood to hold 2 slots and queue 4", func() bool {
		held, waiting := f.srv.adm.load(a)
		return held == 2 && waiting == 4
	})
	wg.Go(func() { answered("other", f.ask(other, tokenForm("test:read"))) })
	waitUntil(t, "the other caller to be admitted", func() bool {
		held, _ := f.srv.adm.load(b)
		return held == 1
	})
	if held, waiting := f.srv.adm.load(a); held != 2 || waiting != 4 {
		t.Fatalf("when the other caller was admitted, the flood held %d slots with %d waiting; want 2 and 4", held, waiting)
	}
	wg.Wait()
	if i := indexOf(order, "other"); i > 2 {
		t.Fatalf("the other caller was answered after %d of the flood's requests (%v); want within its first round of 2", i, order)
	}
	if n := f.emu.Stats().Issued; n != 7 {
		t.Fatalf("%d tokens issued, want 7", n)
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// waitUntil polls cond until it holds, or fails t after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestAdmissionTurns: the slot rules without a network. A caller at its
// share waits although slots are free; a caller under it takes a free
// slot; released slots go to waiting callers in turn, each caller's
// waiters in order; a waiter whose context ends leaves the queue.
func TestAdmissionTurns(t *testing.T) {
	t.Parallel()
	ip := func(s string) callerID { return callerID{uid: -1, ip: netip.MustParseAddr(s)} }
	A, B, C := ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3")
	adm := newAdmission(3, 1, newMetrics(nil))
	ctx := context.Background()
	got := make(chan string, 10)
	wait := func(who callerID, name string) {
		go func() {
			if err := adm.acquire(ctx, who); err != nil {
				got <- name + ": " + err.Error()
				return
			}
			got <- name
		}()
	}
	waiting := func(who callerID, n int) {
		t.Helper()
		waitUntil(t, fmt.Sprintf("%d waiters of %v", n, who), func() bool { _, w := adm.load(who); return w == n })
	}
	mustAcquire := func(who callerID) {
		t.Helper()
		if err := adm.acquire(ctx, who); err != nil {
			t.Fatal(err)
		}
	}
	mustAcquire(A) // A at its share of 1; 2 slots free
	wait(A, "A2")
	waiting(A, 1)
	wait(A, "A3")
	waiting(A, 2)
	mustAcquire(B) // a free slot, B under its share
	wait(C, "C1")
	if g := <-got; g != "C1" {
		t.Fatalf("%s admitted; want C1 (a free slot, C under its share)", g)
	}
	wait(B, "B2")
	waiting(B, 1)
	adm.release(A) // A's turn came first; A goes to the end of the turn
	if g := <-got; g != "A2" {
		t.Fatalf("%s admitted; want A2", g)
	}
	adm.release(C) // a free slot, but A and B are at their share
	time.Sleep(20 * time.Millisecond)
	select {
	case g := <-got:
		t.Fatalf("%s admitted past its share", g)
	default:
	}
	waiting(A, 1)
	waiting(B, 1)
	adm.release(B)
	if g := <-got; g != "B2" {
		t.Fatalf("%s admitted; want B2", g)
	}
	short, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- adm.acquire(short, A) }()
	waiting(A, 2)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("acquire after cancel: %v", err)
	}
	waiting(A, 1)
	adm.release(A)
	if g := <-got; g != "A3" {
		t.Fatalf("%s admitted; want A3", g)
	}
	if held, w := adm.load(A); held != 1 || w != 0 {
		t.Fatalf("A holds %d with %d waiting", held, w)
	}
}
