package daemon

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
)

// token is an immutable cached access token.
type token struct {
	access    string
	scope     string
	issued    time.Time // local time the request that got it started
	expiry    time.Time
	lifetime  time.Duration
	refreshAt time.Time
}

// entry is the cache slot of one key: one distinct request.
type entry struct {
	key    string
	req    grant.Request
	altinn bool
	mpKey  string // for an Altinn entry: the key of its Maskinporten token

	tok      atomic.Pointer[token]
	lastUsed atomic.Int64 // unix nanoseconds of the last request for it
	busy     atomic.Bool  // a flight runs

	mu        sync.Mutex
	flight    *flight
	timer     *time.Timer
	failErr   error // a refusal, remembered until failUntil
	failUntil time.Time
	dead      bool // removed from the store
}

// flight is one exchange in progress for an entry; every caller of the
// entry waits for it.
type flight struct {
	done chan struct{}
	tok  *token
	err  error
}

// store maps keys to entries.
type store struct {
	mu sync.RWMutex
	m  map[string]*entry
}

func (st *store) get(key string) *entry {
	st.mu.RLock()
	e := st.m[key]
	st.mu.RUnlock()
	return e
}

// getBytes is get without converting key to a string.
func (st *store) getBytes(key []byte) *entry {
	st.mu.RLock()
	e := st.m[string(key)]
	st.mu.RUnlock()
	return e
}

// add returns the entry for key, adding mk() if there is none and the store
// holds fewer than max entries; nil if it is full.
func (st *store) add(key string, max int, mk func() *entry) *entry {
	st.mu.Lock()
	defer st.mu.Unlock()
	if e := st.m[key]; e != nil {
		return e
	}
	if len(st.m) >= max {
		return nil
	}
	if st.m == nil {
		st.m = make(map[string]*entry)
	}
	e := mk()
	st.m[key] = e
	return e
}

func (st *store) remove(e *entry) {
	st.mu.Lock()
	if st.m[e.key] == e {
		delete(st.m, e.key)
	}
	st.mu.Unlock()
}

func (st *store) len() int {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return len(st.m)
}

// clear empties the store, stops its timers and returns how many entries
// it held. Flights in progress finish into the removed entries.
func (st *store) clear() int {
	st.mu.Lock()
	old := st.m
	st.m = nil
	st.mu.Unlock()
	for _, e := range old {
		e.mu.Lock()
		e.dead = true
		if e.timer != nil {
			e.timer.Stop()
		}
		e.mu.Unlock()
	}
	return len(old)
}

// Freshness rules, for a token that lives L:
//   - it is served while more than minServe(L) is left (1 s to 10 s, a tenth
//     of L; never more than a third of L);
//   - a token callers use is refreshed margin(L) before it expires, less a
//     random jitter(L);
//   - a key nobody asked for within 2L is dropped.
func minServe(l time.Duration) time.Duration {
	return min(max(l/10, time.Second), 10*time.Second, l/3)
}

func (s *Server) margin(l time.Duration) time.Duration {
	return max(min(s.settings().cfg.RefreshMargin, l/4), 2*minServe(l))
}

func (s *Server) jitter(l time.Duration) time.Duration {
	j := min(s.settings().cfg.RefreshJitter, l/10)
	if j <= 0 {
		return 0
	}
	return rand.N(j)
}

// retryDelay is the wait before another try to refresh a token that is
// still valid, after a failure or while the card is away.
func retryDelay(l time.Duration) time.Duration {
	return min(max(l/20, 50*time.Millisecond), 5*time.Second)
}

func servable(t *token, now time.Time) bool {
	return t != nil && t.expiry.Sub(now) > minServe(t.lifetime)
}

// halfLife: a Maskinporten token good for an Altinn exchange has at least
// half its lifetime left, since the Altinn token expires with it.
func halfLife(t *token, now time.Time) bool {
	return t != nil && t.expiry.Sub(now) >= t.lifetime/2
}

func (s *Server) newToken(t *grant.Token) *token {
	l := time.Duration(t.ExpiresIn) * time.Second
	issued := t.Expiry.Add(-l)
	return &token{
		access:    t.AccessToken,
		scope:     t.Scope,
		issued:    issued,
		expiry:    t.Expiry,
		lifetime:  l,
		refreshAt: t.Expiry.Add(-s.margin(l) - s.jitter(l)),
	}
}

// entryFor returns the entry for key, making it from req if it is new; nil
// when the store is full.
func (s *Server) entryFor(key string, req grant.Request, altinn bool, mpKey string) *entry {
	if e := s.store.get(key); e != nil {
		return e
	}
	return s.store.add(key, s.settings().cfg.MaxKeys, func() *entry {
		e := &entry{key: key, req: req, altinn: altinn, mpKey: mpKey}
		e.lastUsed.Store(s.now().UnixNano())
		return e
	})
}

// errNotReady is returned for a token that cannot be served from the cache
// while the daemon is not ready.
type notReadyError struct{ reason string }

func (e *notReadyError) Error() string { return e.reason }

var errShuttingDown = errors.New("the daemon is shutting down")

// token returns a token for e that ok accepts, from the cache or from an
// exchange that it starts or joins, waiting for it no longer than ctx and
// timeout (if positive) allow. hit reports a cached answer.
func (s *Server) token(ctx context.Context, timeout time.Duration, e *entry, ok func(*token, time.Time) bool) (t *token, hit bool, err error) {
	now := s.now()
	e.lastUsed.Store(now.UnixNano())
	if t := e.tok.Load(); ok(t, now) {
		if !now.Before(t.refreshAt) && !e.busy.Load() && s.cur.Load() != nil {
			// Due, and nobody refreshes it: do it now, in the background.
			e.mu.Lock()
			s.startFlightLocked(e, true)
			e.mu.Unlock()
		}
		return t, true, nil
	}
	e.mu.Lock()
	if e.failErr != nil && now.Before(e.failUntil) {
		err := e.failErr
		e.mu.Unlock()
		return nil, false, err
	}
	if e.flight == nil && s.cur.Load() == nil {
		e.mu.Unlock()
		return nil, false, s.notReady()
	}
	f := s.startFlightLocked(e, false)
	e.mu.Unlock()
	if f == nil {
		return nil, false, errShuttingDown
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	select {
	case <-f.done:
		if f.err != nil {
			return nil, false, f.err
		}
		return f.tok, false, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// startFlightLocked starts an exchange for e unless one runs, and returns
// it; nil when the server is stopping. e.mu must be held.
func (s *Server) startFlightLocked(e *entry, background bool) *flight {
	if e.flight != nil {
		return e.flight
	}
	f := &flight{done: make(chan struct{})}
	if !s.goBackground(func() { s.runFlight(e, f, background) }) {
		return nil
	}
	e.flight = f
	e.busy.Store(true)
	return f
}

// runFlight makes the exchange for e, stores the token and schedules the
// entry's next refresh or removal.
func (s *Server) runFlight(e *entry, f *flight, background bool) {
	st := s.settings()
	ctx, cancel := context.WithTimeout(s.ctx, st.cfg.ExchangeTimeout)
	defer cancel()
	t, err := s.exchange(ctx, e)
	now := s.now()
	e.mu.Lock()
	e.flight = nil
	switch {
	case err == nil:
		e.tok.Store(t)
		e.failErr = nil
	case errors.Is(err, grant.ErrRefused) && st.cfg.RefusalTTL > 0:
		e.failErr, e.failUntil = err, now.Add(st.cfg.RefusalTTL)
	}
	f.tok, f.err = t, err
	e.busy.Store(false)
	s.scheduleLocked(e, now)
	e.mu.Unlock()
	close(f.done)
	if background {
		if err != nil {
			s.metrics.refreshes.WithLabelValues("error").Inc()
		} else {
			s.metrics.refreshes.WithLabelValues("ok").Inc()
		}
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log().LogAttrs(ctx, slog.LevelWarn, "no token", append(requestAttrs(e), slog.String("error", err.Error()), slog.Bool("background", background))...)
	}
}

// exchange gets a new token for e from Maskinporten, or for an Altinn entry
// from Altinn with a Maskinporten token that has half its life left.
func (s *Server) exchange(ctx context.Context, e *entry) (*token, error) {
	c := s.cur.Load()
	if c == nil {
		return nil, s.notReady()
	}
	if !e.altinn {
		ctx = withCallInfo(ctx, &callInfo{endpoint: "token", attrs: requestAttrs(e)})
		if err := s.acquire(ctx); err != nil {
			return nil, err
		}
		gt, err := c.grant.Exchange(ctx, e.req)
		s.release()
		if err != nil {
			return nil, err
		}
		return s.newToken(gt), nil
	}
	if c.grant.Environment.AltinnExchange == "" {
		return nil, &grant.ConfigError{Field: "Environment.AltinnExchange", Reason: "this environment has no Altinn token exchange; give its URL"}
	}
	mp := s.entryFor(e.mpKey, e.req, false, "")
	if mp == nil {
		return nil, errStoreFull
	}
	mt, _, err := s.token(ctx, 0, mp, halfLife)
	if err != nil {
		return nil, err
	}
	ctx = withCallInfo(ctx, &callInfo{endpoint: "altinn", attrs: requestAttrs(e)})
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	at, err := c.grant.AltinnToken(ctx, mt.access)
	s.release()
	if err != nil {
		return nil, err
	}
	return s.newToken(at), nil
}

var errStoreFull = errors.New("the token store is full (MaxKeys); try again later")

// acquire takes a slot of the Maskinporten semaphore.
func (s *Server) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		s.metrics.inflight.Inc()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) release() {
	s.metrics.inflight.Dec()
	<-s.sem
}

// requestAttrs describe e's request for logs: never the pid in clear.
func requestAttrs(e *entry) []slog.Attr {
	a := []slog.Attr{slog.String("scope", strings.Join(e.req.Scopes, " "))}
	if len(e.req.Resources) > 0 {
		a = append(a, slog.String("resource", strings.Join(e.req.Resources, " ")))
	}
	if e.req.ConsumerOrg != "" {
		a = append(a, slog.String("consumer_org", e.req.ConsumerOrg))
	}
	if e.req.PID != "" {
		a = append(a, slog.String("pid", grant.MaskPID(e.req.PID)))
	}
	if e.req.SystemUserOrg != "" {
		a = append(a, slog.String("system_user_org", e.req.SystemUserOrg))
	}
	if e.altinn {
		a = append(a, slog.Bool("altinn", true))
	}
	return a
}

// scheduleLocked sets e's timer for its next refresh or removal check.
// e.mu must be held.
func (s *Server) scheduleLocked(e *entry, now time.Time) {
	if e.dead || s.ctx.Err() != nil {
		return
	}
	t := e.tok.Load()
	last := time.Unix(0, e.lastUsed.Load())
	var at time.Time
	switch {
	case t == nil:
		at = later(e.failUntil, last.Add(time.Second))
	case now.Before(t.refreshAt):
		at = t.refreshAt
	case now.Before(t.expiry) && !last.Before(t.issued):
		at = now.Add(retryDelay(t.lifetime)) // hot: a refresh failed or had to wait
	default:
		at = later(t.expiry, last.Add(2*t.lifetime))
	}
	d := max(at.Sub(now), time.Millisecond)
	if e.timer == nil {
		e.timer = time.AfterFunc(d, func() { s.onTimer(e) })
	} else {
		e.timer.Reset(d)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// onTimer refreshes e if it is due and was used during its token's life,
// drops it if nobody asked for it within two lifetimes, and otherwise sets
// the timer again.
func (s *Server) onTimer(e *entry) {
	if s.ctx.Err() != nil {
		return
	}
	now := s.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead || e.flight != nil {
		return
	}
	t := e.tok.Load()
	last := time.Unix(0, e.lastUsed.Load())
	switch {
	case t == nil && !now.Before(e.failUntil) && now.Sub(last) >= time.Second,
		t != nil && !now.Before(t.expiry) && now.Sub(last) > 2*t.lifetime:
		e.dead = true
		s.store.remove(e)
		return
	case t != nil && !now.Before(t.refreshAt) && now.Before(t.expiry) && !last.Before(t.issued):
		if s.cur.Load() == nil {
			break // not ready: look again after retryDelay
		}
		s.startFlightLocked(e, true)
		return
	}
	s.scheduleLocked(e, now)
}
