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

// TestSharedKeyRunsOnJoinersShare: a flooder that asked first for the key
// another caller needs does not hold it back: when the other caller asks
// for it, its exchange leaves the flood's queue and runs on the other
// caller's share, and the other caller is answered in the flood's first
// round.
func TestSharedKeyRunsOnJoinersShare(t *testing.T) {
	t.Parallel()
	f := newDefFixture(t, func(c *Config) { c.MaxConcurrent = 4 })
	f.emu.SetLatency(700 * time.Millisecond)
	flooder, other := unixPeer(1001), unixPeer(1002)
	a, b := callerID{unix: true, uid: 1001}, callerID{unix: true, uid: 1002}
	var mu sync.Mutex
	var order []string
	answered := func(who string, ans defAnswer) {
		if ans.Status != http.StatusOK {
			t.Errorf("%s: %s", who, ans)
		}
		mu.Lock()
		order = append(order, who)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	flood := func(from, to, held, waiting int) {
		for i := from; i < to; i++ {
			wg.Go(func() { answered(fmt.Sprintf("s%d", i), f.ask(flooder, tokenForm(fmt.Sprintf("test:s%d", i)))) })
		}
		waitUntil(t, "the flood's slots and queue", func() bool {
			h, w := f.srv.adm.load(a)
			return h == held && w == waiting
		})
	}
	flood(0, 2, 2, 0)
	flood(2, 6, 2, 4) // test:s5 waits in the flood's queue
	wg.Go(func() { answered("other", f.ask(other, tokenForm("test:s5"))) })
	waitUntil(t, "test:s5 to run on the other caller's share", func() bool {
		held, _ := f.srv.adm.load(b)
		return held == 1
	})
	if held, waiting := f.srv.adm.load(a); held != 2 || waiting != 3 {
		t.Fatalf("the flood holds %d slots with %d waiting; want 2 and 3", held, waiting)
	}
	wg.Wait()
	before := order[:indexOf(order, "other")]
	if n := len(before) - min(indexOf(before, "s5")+1, 1); n > 2 { // s5 is answered with the other caller
		t.Fatalf("the other caller was answered after %d of the flood's other requests (%v)", n, order)
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
// slot; released slots go to the waiting caller that holds the fewest,
// then in turn, each caller's waiters in order; a waiter whose context
// ends leaves the queue; background refreshes may take every slot nobody
// waits for.
func TestAdmissionTurns(t *testing.T) {
	t.Parallel()
	ip := func(s string) callerID { return callerID{uid: -1, ip: netip.MustParseAddr(s)} }
	A, B, C := ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3")
	adm := newAdmission(3, 1, newMetrics(nil))
	ctx := context.Background()
	got := make(chan string, 10)
	wait := func(who callerID, name string) {
		t.Helper()
		_, before := adm.load(who)
		go func() {
			if _, err := adm.acquire(ctx, who, nil); err != nil {
				got <- name + ": " + err.Error()
				return
			}
			got <- name
		}()
		waiting(t, adm, who, before+1)
	}
	mustAcquire := func(who callerID) {
		t.Helper()
		if _, err := adm.acquire(ctx, who, nil); err != nil {
			t.Fatal(err)
		}
	}
	next := func(want string) {
		t.Helper()
		if g := <-got; g != want {
			t.Fatalf("%s admitted; want %s", g, want)
		}
	}
	mustAcquire(A) // A at its share of 1; 2 slots free
	wait(A, "A2")
	wait(A, "A3")
	mustAcquire(B) // a free slot, B under its share
	mustAcquire(C)
	wait(B, "B2")
	adm.release(A) // A and B wait, hold 0 and 1: A
	next("A2")
	adm.release(C) // a free slot, but A and B are at their share
	time.Sleep(20 * time.Millisecond)
	select {
	case g := <-got:
		t.Fatalf("%s admitted past its share", g)
	default:
	}
	adm.release(B)
	next("B2")
	short, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { _, err := adm.acquire(short, A, nil); done <- err }()
	waiting(t, adm, A, 2)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("acquire after cancel: %v", err)
	}
	waiting(t, adm, A, 1)
	adm.release(A)
	next("A3")
	// Now A and B hold 1 each, 1 slot is free. Refreshes take it and
	// wait for more; a caller that holds none gets the next free slot
	// before refreshes and before A.
	mustAcquire(refreshCaller)
	wait(refreshCaller, "R2")
	wait(A, "A4")
	wait(C, "C2")
	adm.release(B)
	next("C2")
	adm.release(refreshCaller) // refreshes hold 0, A 1: refreshes
	next("R2")
}

func waiting(t *testing.T, adm *admission, who callerID, n int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d waiters of %v", n, who), func() bool { _, w := adm.load(who); return w == n })
}

// TestAdmissionOffer: an exchange waiting in a flooder's queue moves to a
// caller that asks for the same key and could run it at once (offer), and
// not to a caller at its share.
func TestAdmissionOffer(t *testing.T) {
	t.Parallel()
	A, B := callerID{unix: true, uid: 1}, callerID{unix: true, uid: 2}
	adm := newAdmission(4, 2, newMetrics(nil))
	ctx := context.Background()
	for range 2 {
		if _, err := adm.acquire(ctx, A, nil); err != nil {
			t.Fatal(err)
		}
	}
	key := new(int)
	ran := make(chan callerID)
	go func() { who, _ := adm.acquire(ctx, A, key); ran <- who }()
	waiting(t, adm, A, 1)
	adm.offer(key, A) // its own caller: nothing changes
	for range 2 {
		if _, err := adm.acquire(ctx, B, nil); err != nil {
			t.Fatal(err)
		}
	}
	adm.offer(key, B) // B at its share: nothing changes
	waiting(t, adm, A, 1)
	adm.release(B)
	adm.offer(key, B)
	if who := <-ran; who != B {
		t.Fatalf("the exchange ran on %v's slot; want B's", who)
	}
	if held, w := adm.load(B); held != 2 || w != 0 {
		t.Fatalf("B holds %d with %d waiting", held, w)
	}
	if held, w := adm.load(A); held != 2 || w != 0 {
		t.Fatalf("A holds %d with %d waiting", held, w)
	}
}

// TestShareWaitTimesOut: an exchange that waits for its caller's share
// longer than ExchangeTimeout ends with 503 temporarily_unavailable saying
// so (errSlotWait), not that Maskinporten is unavailable, and nothing is
// sent; another caller is served meanwhile.
func TestShareWaitTimesOut(t *testing.T) {
	t.Parallel()
	f := newDefFixture(t, func(c *Config) {
		c.MaxConcurrent = 2 // a share of 1
		c.ExchangeTimeout = 300 * time.Millisecond
	})
	who := callerID{unix: true, uid: 1001}
	if _, err := f.srv.adm.acquire(context.Background(), who, nil); err != nil { // the caller's other exchange
		t.Fatal(err)
	}
	a := f.ask(unixPeer(1001), tokenForm("test:s1"))
	wantErrorAnswer(t, a, http.StatusServiceUnavailable, errTemporarilyUnavailable)
	if a.Description != errSlotWait.Error() || a.Header.Get("Retry-After") == "" {
		t.Fatalf("description %q (Retry-After %q), want %q", a.Description, a.Header.Get("Retry-After"), errSlotWait)
	}
	if n := f.emu.Stats().TokenRequests; n != 0 {
		t.Fatalf("%d requests reached Maskinporten", n)
	}
	wantTokenAnswer(t, f.ask(unixPeer(1002), tokenForm("test:s2")))
	f.srv.adm.release(who)
}

// load returns the slots who holds and its exchanges waiting for one.
func (a *admission) load(who callerID) (held, waiting int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.held[who], a.waiters(who)
}
