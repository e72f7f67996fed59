package grant

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// stubFetcher hands out numbered tokens that live life on clock clk, or
// the errors queued in errs first. If block is set, a fetch waits for it
// or for its context.
type stubFetcher struct {
	clk   func() time.Time
	life  time.Duration
	block chan struct{}

	mu         sync.Mutex
	calls      int
	background int // calls for background refreshes
	errs       []error
	started    chan struct{} // closed by the first blocked fetch
}

func (f *stubFetcher) Fetch(ctx context.Context, background bool) (*Token, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	if background {
		f.background++
	}
	var err error
	if len(f.errs) > 0 {
		err, f.errs = f.errs[0], f.errs[1:]
	}
	block, started := f.block, f.started
	f.started = nil
	f.mu.Unlock()
	if block != nil {
		if started != nil {
			close(started)
		}
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	return &Token{AccessToken: fmt.Sprintf("token-%d", n), TokenType: "Bearer",
		ExpiresIn: int(f.life / time.Second), Expiry: f.clk().Add(f.life)}, nil
}

// fail queues errors for the next fetches.
func (f *stubFetcher) fail(errs ...error) {
	f.mu.Lock()
	f.errs = append(f.errs, errs...)
	f.mu.Unlock()
}

func (f *stubFetcher) counts() (calls, background int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.background
}

// newStubCache returns a cache on a fake clock, closed at the end of the
// test, and a fetcher of tokens that live two minutes.
func newStubCache(t *testing.T, c *Cache) (*Cache, *fakeClock, *stubFetcher) {
	clk := newFakeClock()
	c.now = clk.Now
	t.Cleanup(c.Close)
	return c, clk, &stubFetcher{clk: clk.Now, life: 120 * time.Second}
}

// waitFlight waits for the fetch in progress for e, if any.
func waitFlight(e *Entry) {
	e.mu.Lock()
	fl := e.flight
	e.mu.Unlock()
	if fl != nil {
		<-fl.done
	}
}

func mustToken(t *testing.T, e *Entry, p Purpose) (string, bool) {
	t.Helper()
	tok, hit, err := e.Token(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken, hit
}

func TestRefreshRule(t *testing.T) {
	for _, tc := range []struct {
		margin, life                       time.Duration
		wantReserve, wantMargin, wantRetry time.Duration
	}{
		{30 * time.Second, 120 * time.Second, 10 * time.Second, 30 * time.Second, 5 * time.Second},
		{30 * time.Second, 119 * time.Second, 10 * time.Second, 30 * time.Second, 5 * time.Second},
		{30 * time.Second, 40 * time.Second, 4 * time.Second, 20 * time.Second, 2 * time.Second}, // halfway
		{30 * time.Second, 10 * time.Minute, 10 * time.Second, 30 * time.Second, 5 * time.Second},
		{30 * time.Second, 3 * time.Second, time.Second, 2 * time.Second, 150 * time.Millisecond}, // at least 2 reserves
		{time.Second, 120 * time.Second, 10 * time.Second, 20 * time.Second, 5 * time.Second},     // at least 2 reserves
		{30 * time.Second, time.Second, time.Second / 3, 2 * time.Second / 3, 50 * time.Millisecond},
	} {
		if got := reserve(tc.life); got != tc.wantReserve {
			t.Errorf("reserve(%s) = %s, want %s", tc.life, got, tc.wantReserve)
		}
		if got := margin(tc.margin, tc.life); got != tc.wantMargin {
			t.Errorf("margin(%s, %s) = %s, want %s", tc.margin, tc.life, got, tc.wantMargin)
		}
		if got := retryDelay(tc.life); got != tc.wantRetry {
			t.Errorf("retryDelay(%s) = %s, want %s", tc.life, got, tc.wantRetry)
		}
	}

	// With the daemon's jitter (moved from the daemon's TestFreshnessRules):
	// a refresh is due after now and before the token stops being served,
	// and for a token that lives a minute or more, at most 40 s early.
	c := &Cache{RefreshMargin: 30 * time.Second, RefreshJitter: 10 * time.Second}
	for _, l := range []time.Duration{3 * time.Second, 4 * time.Second, time.Minute, 120 * time.Second, 10 * time.Minute} {
		for range 20 {
			now := time.Now()
			tok := c.newCached(&Token{AccessToken: "x", ExpiresIn: int(l / time.Second), Expiry: now.Add(l)})
			served := tok.token.Expiry.Add(-reserve(l)) // served until then
			if !tok.refreshAt.Before(served) || !tok.refreshAt.After(now) {
				t.Fatalf("lifetime %s: refresh at +%s, served until +%s", l, tok.refreshAt.Sub(now), served.Sub(now))
			}
			if l >= time.Minute && tok.token.Expiry.Sub(tok.refreshAt) > 40*time.Second {
				t.Fatalf("lifetime %s: refreshed %s early", l, tok.token.Expiry.Sub(tok.refreshAt))
			}
		}
	}
}

// Moved from the daemon's TestStoreDropsUnusedKeys.
func TestCacheDropsUnusedKeys(t *testing.T) {
	c, clk, f := newStubCache(t, &Cache{Background: true})
	now := clk.Now()
	e, err := c.Add("k", f)
	if err != nil {
		t.Fatal(err)
	}
	// A token issued two seconds ago that lives one second: expired, and
	// not asked for within two lifetimes.
	e.tok.Store(c.newCached(&Token{AccessToken: "x", ExpiresIn: 1, Expiry: now.Add(-time.Second)}))
	e.lastUsed.Store(now.Add(-3 * time.Second).UnixNano())
	e.onTimer()
	if c.Len() != 0 || !e.dead.Load() {
		t.Fatal("a key unused for two lifetimes was kept")
	}
	// Used recently: kept, and its timer set.
	e2, err := c.Add("k2", f)
	if err != nil {
		t.Fatal(err)
	}
	e2.tok.Store(c.newCached(&Token{AccessToken: "x", ExpiresIn: 1, Expiry: now.Add(-time.Second)}))
	e2.onTimer()
	if c.Len() != 1 || e2.timer == nil {
		t.Fatal("a key used just now was dropped")
	}
}

func TestCacheBackgroundRefresh(t *testing.T) {
	c, clk, f := newStubCache(t, &Cache{Background: true})
	e, _ := c.Add("k", f)
	first, hit := mustToken(t, e, ForUse)
	if hit {
		t.Fatal("the first token was a hit")
	}
	// Due at 90 s: still handed out, and refreshed in the background.
	clk.Advance(91 * time.Second)
	if tok, ok := e.Cached(ForUse); !ok || tok.AccessToken != first {
		t.Fatalf("Cached = %v, %v; want the due token", tok, ok)
	}
	waitFlight(e)
	if calls, bg := f.counts(); calls != 2 || bg != 1 {
		t.Fatalf("%d fetches, %d in the background; want 2 and 1", calls, bg)
	}
	second, hit := mustToken(t, e, ForUse)
	if second == first || !hit {
		t.Fatalf("after the refresh: %s (hit %v)", second, hit)
	}

	// The timer refreshes a due token that was used during its life.
	clk.Advance(91 * time.Second)
	e.onTimer()
	waitFlight(e)
	if calls, bg := f.counts(); calls != 3 || bg != 2 {
		t.Fatalf("timer: %d fetches, %d in the background; want 3 and 2", calls, bg)
	}
	// A token nobody asked for is not refreshed, only dropped later.
	clk.Advance(91 * time.Second)
	e.onTimer()
	waitFlight(e)
	if calls, _ := f.counts(); calls != 3 {
		t.Fatalf("an unused token was refreshed (%d fetches)", calls)
	}
	clk.Advance(240 * time.Second)
	e.onTimer()
	if c.Len() != 0 {
		t.Fatal("an unused key was kept for more than two lifetimes")
	}
}

func TestCacheKeepsGoodTokenWhenRefreshFails(t *testing.T) {
	c, clk, f := newStubCache(t, &Cache{Background: true})
	e, _ := c.Add("k", f)
	first, _ := mustToken(t, e, ForUse)
	clk.Advance(100 * time.Second)
	f.fail(&TokenError{StatusCode: 503})
	e.Cached(ForUse) // due: starts a refresh, which fails
	waitFlight(e)
	tok, ok := e.Cached(ForUse)
	if !ok || tok.AccessToken != first {
		t.Fatalf("Cached = %v, %v; want the old token", tok, ok)
	}
	if at := e.tok.Load().refreshAt; !at.Equal(clk.Now().Add(5 * time.Second)) {
		t.Fatalf("next try in %s, want 5s", at.Sub(clk.Now()))
	}
	if calls, _ := f.counts(); calls != 2 {
		t.Fatalf("%d fetches within the backoff, want 2", calls)
	}
	// Past the reserve the token is no longer served: callers wait.
	clk.Advance(10 * time.Second)
	if _, ok := e.Cached(ForUse); ok {
		t.Fatal("a token with less than its reserve left was served")
	}
	if tok, hit := mustToken(t, e, ForUse); tok == first || hit {
		t.Fatalf("got %s (hit %v), want a new token", tok, hit)
	}
}

func TestCacheRemembersRefusal(t *testing.T) {
	c, clk, f := newStubCache(t, &Cache{RefusalTTL: 5 * time.Second})
	e, _ := c.Add("k", f)
	f.fail(&TokenError{StatusCode: 400, Code: "invalid_scope"}, &TokenError{StatusCode: 503})
	for range 2 {
		if _, _, err := e.Token(context.Background(), ForUse); !errors.Is(err, ErrRefused) {
			t.Fatalf("Token = %v, want ErrRefused", err)
		}
	}
	if calls, _ := f.counts(); calls != 1 {
		t.Fatalf("%d fetches, want 1: the refusal was not remembered", calls)
	}
	clk.Advance(6 * time.Second)
	if _, _, err := e.Token(context.Background(), ForUse); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("after the TTL: %v, want ErrUnavailable from a new fetch", err)
	}
	// An outage is not remembered.
	if _, _, err := e.Token(context.Background(), ForUse); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}

func TestCacheForExchangeNeedsHalfLife(t *testing.T) {
	c, clk, f := newStubCache(t, &Cache{})
	e, _ := c.Add("k", f)
	first, _ := mustToken(t, e, ForUse)
	clk.Advance(59 * time.Second)
	if tok, hit := mustToken(t, e, ForExchange); tok != first || !hit {
		t.Fatalf("with half its life left: %s (hit %v), want the cached token", tok, hit)
	}
	clk.Advance(2 * time.Second)
	if tok, _ := mustToken(t, e, ForUse); tok != first {
		t.Fatal("ForUse did not get the cached token before its refresh time")
	}
	if tok, hit := mustToken(t, e, ForExchange); tok == first || hit {
		t.Fatal("ForExchange got a token with less than half its life left")
	}
}

func TestCacheFull(t *testing.T) {
	c, clk, f := newStubCache(t, &Cache{MaxEntries: 2, RefuseWhenFull: true})
	for _, k := range []string{"a", "b"} {
		e, err := c.Add(k, f)
		if err != nil {
			t.Fatal(err)
		}
		mustToken(t, e, ForUse)
	}
	if _, err := c.Add("c", f); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("Add to a full cache = %v, want ErrCacheFull", err)
	}
	// Once their tokens expired and nobody asked for two lifetimes, the
	// old keys make room.
	clk.Advance(241 * time.Second)
	if _, err := c.Add("c", f); err != nil || c.Len() != 1 {
		t.Fatalf("Add after the keys went idle = %v, %d keys; want room", err, c.Len())
	}

	// Without RefuseWhenFull, the least recently used key goes.
	c2, clk2, f2 := newStubCache(t, &Cache{MaxEntries: 2})
	a, _ := c2.Add("a", f2)
	b, _ := c2.Add("b", f2)
	mustToken(t, a, ForUse)
	mustToken(t, b, ForUse)
	clk2.Advance(time.Second)
	mustToken(t, a, ForUse)
	if _, err := c2.Add("c", f2); err != nil {
		t.Fatal(err)
	}
	if c2.Lookup([]byte("b")) != nil || !b.dead.Load() || c2.Lookup([]byte("a")) != a || c2.Len() != 2 {
		t.Fatal("the least recently used key was not the one evicted")
	}
}

func TestCacheClose(t *testing.T) {
	c, _, f := newStubCache(t, &Cache{Background: true})
	started := make(chan struct{})
	f.block, f.started = make(chan struct{}), started
	e, _ := c.Add("k", f)
	errc := make(chan error, 1)
	go func() {
		_, _, err := e.Token(context.Background(), ForUse)
		errc <- err
	}()
	<-started
	c.Close() // cancels the fetch and waits for it
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("a fetch in progress at Close gave %v, want context.Canceled", err)
	}
	if _, err := c.Add("k2", f); !errors.Is(err, ErrCacheClosed) {
		t.Fatalf("Add after Close = %v, want ErrCacheClosed", err)
	}
	if _, _, err := e.Token(context.Background(), ForUse); !errors.Is(err, ErrCacheClosed) {
		t.Fatalf("Token after Close = %v, want ErrCacheClosed", err)
	}
	if c.Len() != 0 {
		t.Fatalf("Len after Close = %d", c.Len())
	}
}

// The daemon's hot path: finding a key and its cached token.
func TestCacheHitDoesNotAllocate(t *testing.T) {
	c, _, f := newStubCache(t, &Cache{Background: true})
	e, _ := c.Add("key", f)
	mustToken(t, e, ForUse)
	key := []byte("key")
	if n := testing.AllocsPerRun(1000, func() {
		if _, ok := c.Lookup(key).Cached(ForUse); !ok {
			t.Fatal("not cached")
		}
	}); n != 0 {
		t.Errorf("Lookup and Cached allocate %v times per call, want 0", n)
	}
}
