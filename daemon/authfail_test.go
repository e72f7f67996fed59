package daemon

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAuthClock replaces a Server's clock and sleep for failed
// authentication: it records the delays asked for and, if advance, moves
// the clock by them, as a caller waiting for each answer would see.
type fakeAuthClock struct {
	mu      sync.Mutex
	now     time.Time
	advance bool
	delays  []time.Duration
}

func installFakeAuthClock(s *Server, advance bool) *fakeAuthClock {
	c := &fakeAuthClock{now: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), advance: advance}
	s.authFail.now = func() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
	s.authFail.sleep = func(_ context.Context, d time.Duration) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.delays = append(c.delays, d)
		if c.advance {
			c.now = c.now.Add(d)
		}
	}
	return c
}

func (c *fakeAuthClock) add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func (c *fakeAuthClock) asked() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.delays...)
}

const wrongSecret = "Wrong-Guess-5e1f"

// TestAuthFailuresLoggedAndSlowed: wrong TCP credentials get 401
// invalid_client as before, and now: a warn line per address at most once
// a minute with the count since the last line, never the secret or the
// guess; from the 6th failure of an address without a quiet minute, a
// delay before the answer, doubling from 100 ms to 1 s; no delay for
// another address, nor for the right secret; a metric of failures. Before,
// 2,000 guesses went by at ~4,900/s with no log line and no slowdown.
func TestAuthFailuresLoggedAndSlowed(t *testing.T) {
	t.Parallel()
	f := newDefFixture(t, nil)
	clock := installFakeAuthClock(f.srv, true)
	guesser := tcpPeer("192.0.2.9:5000", wrongSecret)
	for range 12 {
		a := f.ask(guesser, tokenForm("test:read"))
		wantErrorAnswer(t, a, http.StatusUnauthorized, errInvalidClient)
		if a.Header.Get("WWW-Authenticate") == "" {
			t.Fatal("401 without WWW-Authenticate")
		}
	}
	ms := time.Millisecond
	want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second, time.Second}
	if got := clock.asked(); !equalDurations(got, want) {
		t.Fatalf("delays asked for %v, want %v", got, want)
	}
	// Another address is not slowed; the right secret is not slowed.
	wantErrorAnswer(t, f.ask(tcpPeer("192.0.2.10:5000", wrongSecret), tokenForm("test:read")), http.StatusUnauthorized, errInvalidClient)
	wantTokenAnswer(t, f.ask(tcpPeer("192.0.2.10:5001", defSecret), tokenForm("test:read")))
	wantTokenAnswer(t, f.ask(tcpPeer("192.0.2.9:5001", defSecret), tokenForm("test:read")))
	if got := clock.asked(); !equalDurations(got, want) {
		t.Fatalf("delays asked for %v after other callers, want still %v", got, want)
	}

	lines := authLines(f.logs.String())
	if len(lines) != 2 || !strings.Contains(lines[0], "address=192.0.2.9 failures=1 ") || !strings.Contains(lines[1], "address=192.0.2.10 failures=1 ") {
		t.Fatalf("log lines %q, want one per address with failures=1", lines)
	}
	// A quiet minute later: the next failure is logged with the count
	// since the last line, and is not slowed.
	clock.add(2 * time.Minute)
	wantErrorAnswer(t, f.ask(guesser, tokenForm("test:read")), http.StatusUnauthorized, errInvalidClient)
	lines = authLines(f.logs.String())
	if len(lines) != 3 || !strings.Contains(lines[2], "address=192.0.2.9 failures=12 credentials=\"authorization header\" delay=0s") {
		t.Fatalf("log lines %q, want a third for 192.0.2.9 with failures=12", lines)
	}
	if got := clock.asked(); !equalDurations(got, want) {
		t.Fatalf("delays asked for %v after a quiet minute, want still %v", got, want)
	}
	if n := counterValue(t, f.srv, "mphsm_auth_failures_total"); n != 14 {
		t.Fatalf("mphsm_auth_failures_total %v, want 14", n)
	}
	if logs := f.logs.String(); strings.Contains(logs, wrongSecret) || strings.Contains(logs, defSecret) {
		t.Fatalf("the log holds a secret:\n%s", logs)
	}
}

// TestAuthFailuresSpacedPerAddress: attempts from one address that come
// at once (the clock does not move between them) are answered one delay
// after another, so that parallel guessing is no faster, up to 10 s of
// waiting for one answer; credentials in the form count as well.
func TestAuthFailuresSpacedPerAddress(t *testing.T) {
	t.Parallel()
	f := newDefFixture(t, nil)
	clock := installFakeAuthClock(f.srv, false)
	form := tokenForm("test:read")
	form.Set("client_id", defClient)
	form.Set("client_secret", wrongSecret)
	noAuth := func(r *http.Request) *http.Request {
		r.RemoteAddr, r.Host = "[2001:db8:5:6::1]:7000", "localhost:8400"
		return r
	}
	for range 20 {
		wantErrorAnswer(t, f.ask(noAuth, form), http.StatusUnauthorized, errInvalidClient)
	}
	ms := time.Millisecond
	want := []time.Duration{100 * ms, 300 * ms, 700 * ms, 1500 * ms, 2500 * ms, 3500 * ms, 4500 * ms, 5500 * ms,
		6500 * ms, 7500 * ms, 8500 * ms, 9500 * ms, 10 * time.Second, 10 * time.Second, 10 * time.Second}
	if got := clock.asked(); !equalDurations(got, want) {
		t.Fatalf("delays asked for %v, want %v", got, want)
	}
	if lines := authLines(f.logs.String()); len(lines) != 1 || !strings.Contains(lines[0], "address=2001:db8:5:6::/64 failures=1 credentials=form") {
		t.Fatalf("log lines %q", lines)
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var authLine = regexp.MustCompile(`(?m)^.*level=WARN msg="TCP client authentication failed".*$`)

func authLines(logs string) []string { return authLine.FindAllString(logs, -1) }

// counterValue reads a counter without labels from s's registry.
func counterValue(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.settings().cfg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}
