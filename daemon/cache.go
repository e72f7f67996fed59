package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
)

// cache holds the daemon's tokens, one entry per request key. A token that
// lives L and expires at E is served while more than its reserve (L/10, 1
// to 10 s, at most L/3) is left; if asked for during its life it is
// refreshed at E - max(min(RefreshMargin, L/2), 2 reserves), less a jitter
// below min(RefreshJitter, L/10); a failed refresh tries again L/20 later
// (50 ms to 5 s). A refusal (grant.ErrRefused) is remembered for
// RefusalTTL. One fetch per entry runs at a time. An entry unused for two
// lifetimes after expiry is dropped; a full cache refuses a new key rather
// than push out the tokens other callers use.
type cache struct {
	cfg Config // MaxKeys, RefreshMargin, RefreshJitter, RefusalTTL: New's

	mu        sync.RWMutex
	entries   map[string]*entry
	lastSweep time.Time

	ctx   context.Context   // the server's: its end closes the cache
	spawn func(func()) bool // runs a flight as the server's background work
}

var (
	errCacheFull   = errors.New("the token cache is full (MaxKeys, --max-keys); try again later")
	errCacheClosed = errors.New("the token cache is closed")
)

// Purposes of a token: forExchange needs half its lifetime left, as the
// Altinn token exchanged for it expires with it.
const forUse, forExchange = 0, 1

func (c *cache) closed() bool { return c.ctx.Err() != nil }

// entry is one key's token and the fetch that replaces it.
type entry struct {
	c   *cache
	key string
	req *request // fetches its tokens

	tok       atomic.Pointer[cached] // read without locks
	lastUsed  atomic.Int64           // unix nanoseconds
	failUntil atomic.Int64           // unix nanoseconds until which failErr is answered
	busy      atomic.Bool            // a flight runs
	dead      atomic.Bool            // removed from the cache

	mu      sync.Mutex
	flight  *flight
	timer   *time.Timer
	failErr error
}

// flight is one fetch in progress; every caller of the entry waits for it.
type flight struct {
	done chan struct{}
	tok  *cached
	err  error
}

// cached is a token, its times, and its answer but for expires_in, encoded
// once: encoding it per request took a third of a cached request's time.
type cached struct {
	token      *grant.Token
	lifetime   time.Duration
	refreshAt  time.Time
	serveUntil time.Time
	head, tail []byte // {"access_token":...,"expires_in": and ,"scope":...}
}

func reserve(l time.Duration) time.Duration { return min(max(l/10, time.Second), 10*time.Second, l/3) }
func retryDelay(l time.Duration) time.Duration {
	return min(max(l/20, 50*time.Millisecond), 5*time.Second)
}

func (c *cache) newCached(t *grant.Token, r *request) *cached {
	l := time.Duration(t.ExpiresIn) * time.Second
	margin := max(min(c.cfg.RefreshMargin, l/2), 2*reserve(l))
	if j := min(c.cfg.RefreshJitter, l/10); j > 0 {
		margin += rand.N(j)
	}
	scope := t.Scope
	if scope == "" {
		scope = strings.Join(r.req.Scopes, " ")
	}
	access, _ := json.Marshal(t.AccessToken)
	sc, _ := json.Marshal(scope)
	return &cached{token: t, lifetime: l, refreshAt: t.Expiry.Add(-margin), serveUntil: t.Expiry.Add(-reserve(l)),
		head: fmt.Appendf(nil, `{"access_token":%s,"token_type":"Bearer","expires_in":`, access),
		tail: fmt.Appendf(nil, `,"scope":%s}`+"\n", sc)}
}

// usable reports whether t may be served for purpose p at now.
func usable(t *cached, now time.Time, p int) bool {
	return t != nil && now.Before(t.serveUntil) && (p == forUse || !now.After(t.token.Expiry.Add(-t.lifetime/2)))
}

// lookup returns the entry of key, or nil, without allocating.
func (c *cache) lookup(key []byte) *entry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.entries[string(key)]
}

// add returns the entry of key, adding one that r fetches for. A full
// cache drops idle entries (at most once a second), or errCacheFull.
func (c *cache) add(key string, r *request) (*entry, error) {
	if e := c.lookup([]byte(key)); e != nil {
		return e, nil
	}
	if c.closed() {
		return nil, errCacheClosed
	}
	now := time.Now()
	var dropped []*entry
	c.mu.Lock()
	e := c.entries[key]
	if e == nil && len(c.entries) >= c.cfg.MaxKeys && now.Sub(c.lastSweep) >= time.Second {
		c.lastSweep = now
		for k, old := range c.entries {
			if old.idle(now) {
				delete(c.entries, k)
				dropped = append(dropped, old)
			}
		}
	}
	if e == nil && len(c.entries) < c.cfg.MaxKeys {
		e = &entry{c: c, key: key, req: r}
		e.lastUsed.Store(now.UnixNano())
		c.entries[key] = e
	}
	c.mu.Unlock()
	for _, d := range dropped {
		d.kill() // outside c.mu: onTimer takes e.mu, then c.mu
	}
	if e == nil {
		return nil, errCacheFull
	}
	return e, nil
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// clear drops every entry and returns how many; fetches finish for their callers.
func (c *cache) clear() int {
	c.mu.Lock()
	old := c.entries
	c.entries = map[string]*entry{}
	c.mu.Unlock()
	for _, e := range old {
		e.kill()
	}
	return len(old)
}

// cached returns e's token if it may be served for p, and starts a due refresh.
func (e *entry) cached(p int) *cached {
	now := time.Now()
	if n := now.UnixNano(); n-e.lastUsed.Load() >= int64(time.Millisecond) {
		e.lastUsed.Store(n) // at most once a millisecond: callers on many cores do not fight over it
	}
	t := e.tok.Load()
	if !usable(t, now, p) {
		return nil
	}
	if !now.Before(t.refreshAt) && !e.busy.Load() && !e.dead.Load() {
		e.mu.Lock()
		e.startLocked(true)
		e.mu.Unlock()
	}
	return t
}

// token returns a token for p: cached (hit), or from the flight it starts or joins.
func (e *entry) token(ctx context.Context, p int) (tok *cached, hit bool, err error) {
	if t := e.cached(p); t != nil {
		return t, true, nil
	}
	e.mu.Lock()
	now := time.Now()
	if t := e.tok.Load(); usable(t, now, p) { // a flight ended meanwhile
		e.mu.Unlock()
		return t, true, nil
	}
	if e.failErr != nil && now.UnixNano() < e.failUntil.Load() {
		err := e.failErr
		e.mu.Unlock()
		return nil, false, err
	}
	fl := e.startLocked(false)
	e.mu.Unlock()
	if fl == nil {
		return nil, false, errCacheClosed
	}
	select {
	case <-fl.done:
		return fl.tok, false, fl.err // no token with an error
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// startLocked starts a flight unless one runs, and returns it; nil once closed.
func (e *entry) startLocked(background bool) *flight {
	if e.flight != nil {
		return e.flight
	}
	fl := &flight{done: make(chan struct{})}
	if !e.c.spawn(func() { e.run(fl, background) }) {
		return nil
	}
	e.flight = fl
	e.busy.Store(true)
	return fl
}

// run makes fl's fetch, stores its token (or keeps a servable old one) and sets the timer.
func (e *entry) run(fl *flight, background bool) {
	tok, err := e.req.fetch(e.c.ctx, background)
	now := time.Now()
	e.mu.Lock()
	e.flight = nil
	if err == nil {
		fl.tok = e.c.newCached(tok, e.req)
		e.tok.Store(fl.tok)
		e.failErr = nil
	} else {
		if errors.Is(err, grant.ErrRefused) && e.c.cfg.RefusalTTL > 0 {
			e.failErr = err
			e.failUntil.Store(now.Add(e.c.cfg.RefusalTTL).UnixNano())
		}
		if old := e.tok.Load(); old != nil && now.Before(old.serveUntil) {
			t := *old
			if t.refreshAt = now.Add(retryDelay(old.lifetime)); t.refreshAt.After(old.serveUntil) {
				t.refreshAt = old.serveUntil
			}
			fl.tok, err = &t, nil
			e.tok.Store(&t)
		}
		fl.err = err
	}
	e.busy.Store(false)
	e.scheduleLocked(now)
	e.mu.Unlock()
	close(fl.done)
}

// idle reports whether e may be dropped: no fetch runs, and its token expired two
// lifetimes after its last use, or, with no token or refusal to keep, unused for a second.
func (e *entry) idle(now time.Time) bool {
	if e.busy.Load() {
		return false
	}
	last := time.Unix(0, e.lastUsed.Load())
	if t := e.tok.Load(); t != nil {
		return !now.Before(t.token.Expiry) && now.Sub(last) > 2*t.lifetime
	}
	return now.UnixNano() >= e.failUntil.Load() && now.Sub(last) >= time.Second
}

// hot reports whether e was asked for during the life of its token t.
func (e *entry) hot(t *cached) bool {
	return e.lastUsed.Load() >= t.token.Expiry.Add(-t.lifetime).UnixNano()
}

// scheduleLocked sets e's timer for its next refresh or idle check.
func (e *entry) scheduleLocked(now time.Time) {
	if e.dead.Load() || e.c.closed() {
		return
	}
	last := time.Unix(0, e.lastUsed.Load())
	var at time.Time
	switch t := e.tok.Load(); {
	case t == nil:
		at = later(time.Unix(0, e.failUntil.Load()), last.Add(time.Second))
	case now.Before(t.refreshAt):
		at = t.refreshAt
	case now.Before(t.token.Expiry) && e.hot(t):
		at = now.Add(retryDelay(t.lifetime)) // a refresh failed or could not start
	default:
		at = later(t.token.Expiry, last.Add(2*t.lifetime))
	}
	d := max(at.Sub(now), time.Millisecond)
	if e.timer == nil {
		e.timer = time.AfterFunc(d, e.onTimer)
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

func (e *entry) onTimer() {
	if e.c.closed() {
		return
	}
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead.Load() || e.flight != nil {
		return
	}
	t := e.tok.Load()
	switch {
	case e.idle(now):
		e.dead.Store(true)
		e.c.mu.Lock()
		if e.c.entries[e.key] == e {
			delete(e.c.entries, e.key)
		}
		e.c.mu.Unlock()
		return
	case t != nil && !now.Before(t.refreshAt) && now.Before(t.token.Expiry) && e.hot(t):
		if e.startLocked(true) != nil {
			return
		}
	}
	e.scheduleLocked(now)
}

// kill marks e removed and stops its timer.
func (e *entry) kill() {
	e.mu.Lock()
	e.dead.Store(true)
	if e.timer != nil {
		e.timer.Stop()
	}
	e.mu.Unlock()
}
