package grant

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Entry is the slot of one key in a Cache: its token, and the fetch that
// replaces it. Get one with Cache.Add or Cache.Lookup. It is safe for
// concurrent use.
type Entry struct {
	c       *Cache
	key     string
	fetcher Fetcher // for Token and background refreshes

	tok       atomic.Pointer[cached] // read without locks
	lastUsed  atomic.Int64           // unix nanoseconds of the last request for it
	failUntil atomic.Int64           // unix nanoseconds until which failErr is returned
	busy      atomic.Bool            // a flight runs
	dead      atomic.Bool            // removed from the cache

	mu      sync.Mutex
	flight  *flight
	timer   *time.Timer
	failErr error // a refusal, remembered until failUntil
}

// flight is one fetch in progress for an entry; every caller of the entry
// waits for it.
type flight struct {
	done   chan struct{}
	by     Fetcher // the fetcher it runs
	tok    *cached
	err    error
	failed error // the error of a refresh that failed while tok was kept
}

// Cached returns the entry's token if the refresh rule lets it be handed
// out for p now, without fetching or waiting. With Cache.Background, a
// token that is due for refresh starts one in the background. The token is
// shared: do not modify it.
func (e *Entry) Cached(p Purpose) (*Token, bool) {
	if t := e.fresh(e.c.clock(), p); t != nil {
		return t.token, true
	}
	return nil, false
}

// Token returns a token for p: the cached one while the refresh rule allows
// it, and otherwise a new one from the entry's Fetcher, which it waits for as
// long as ctx allows. One fetch runs per entry at a time; callers that come
// meanwhile wait for the same one, and a fetch goes on when its callers stop
// waiting. hit reports a token from the cache. The token is shared: do not
// modify it.
func (e *Entry) Token(ctx context.Context, p Purpose) (tok *Token, hit bool, err error) {
	t, fl, err := e.get(ctx, e.fetcher, p)
	if err != nil {
		return nil, false, err
	}
	return t.token, fl == nil, nil
}

// Fetcher returns the Fetcher the entry was added with, which makes its
// fetches and background refreshes.
func (e *Entry) Fetcher() Fetcher { return e.fetcher }

// touch records a request for e at now, at most once a millisecond, so that
// callers on many cores do not fight over the cache line.
func (e *Entry) touch(now time.Time) {
	n := now.UnixNano()
	if n-e.lastUsed.Load() >= int64(time.Millisecond) {
		e.lastUsed.Store(n)
	}
}

// fresh is the fast path: e's token if it serves p at now, else nil. It
// records the request, and with Background starts a refresh that is due.
func (e *Entry) fresh(now time.Time, p Purpose) *cached {
	e.touch(now)
	t := e.tok.Load()
	if !e.c.usable(t, now, p) {
		return nil
	}
	if e.c.Background && due(t, now) && !e.busy.Load() && !e.dead.Load() {
		e.mu.Lock()
		e.startLocked(e.fetcher, true)
		e.mu.Unlock()
	}
	return t
}

// get returns a token for p: the cached one, or one from the flight it
// starts with f or joins, which it returns too (nil for a cached token).
func (e *Entry) get(ctx context.Context, f Fetcher, p Purpose) (*cached, *flight, error) {
	if t := e.fresh(e.c.clock(), p); t != nil {
		return t, nil, nil
	}
	e.mu.Lock()
	now := e.c.clock()
	if t := e.tok.Load(); e.c.usable(t, now, p) { // a flight ended meanwhile
		e.mu.Unlock()
		return t, nil, nil
	}
	if e.failErr != nil && now.UnixNano() < e.failUntil.Load() {
		err := e.failErr
		e.mu.Unlock()
		return nil, nil, err
	}
	fl := e.startLocked(f, false)
	e.mu.Unlock()
	if fl == nil {
		return nil, nil, ErrCacheClosed
	}
	select {
	case <-fl.done:
	case <-ctx.Done():
		return nil, fl, ctx.Err()
	}
	if fl.err != nil {
		return nil, fl, fl.err
	}
	return fl.tok, fl, nil
}

// startLocked starts a flight that fetches a token for e with f, unless one
// runs, and returns it; nil once the cache is closed. e.mu must be held.
func (e *Entry) startLocked(f Fetcher, background bool) *flight {
	if e.flight != nil {
		return e.flight
	}
	fl := &flight{done: make(chan struct{}), by: f}
	if !e.c.goFlight(func(ctx context.Context) { e.run(ctx, fl, background) }) {
		return nil
	}
	e.flight = fl
	e.busy.Store(true)
	return fl
}

// run makes fl's fetch, stores the token, or keeps the old one if the fetch
// failed while it was still good, and schedules the entry's timer.
func (e *Entry) run(ctx context.Context, fl *flight, background bool) {
	tok, err := fl.by.Fetch(ctx, background)
	c := e.c
	now := c.clock()
	e.mu.Lock()
	e.flight = nil
	if err == nil {
		fl.tok = c.newCached(tok)
		e.tok.Store(fl.tok)
		e.failErr = nil
	} else {
		if errors.Is(err, ErrRefused) && c.RefusalTTL > 0 {
			e.failErr = err
			e.failUntil.Store(now.Add(c.RefusalTTL).UnixNano())
		}
		// Keep a token that is still good, unless Invalidate dropped it.
		if old := e.tok.Load(); old != nil && now.Before(old.serveUntil) {
			if t := backoff(old, now); e.tok.CompareAndSwap(old, t) {
				fl.tok, fl.failed, err = t, err, nil
			}
		}
		fl.err = err
	}
	e.busy.Store(false)
	e.scheduleLocked(now)
	e.mu.Unlock()
	close(fl.done)
}

// idle reports whether e may be dropped at now: no fetch runs, and either
// its token has expired and nobody asked for it within two lifetimes, or it
// has no token, no refusal to remember and nobody asked for it for a second.
func (e *Entry) idle(now time.Time) bool {
	if e.busy.Load() {
		return false
	}
	last := time.Unix(0, e.lastUsed.Load())
	t := e.tok.Load()
	if t == nil {
		return now.UnixNano() >= e.failUntil.Load() && now.Sub(last) >= time.Second
	}
	return !now.Before(t.token.Expiry) && now.Sub(last) > 2*t.lifetime
}

// hot reports whether e was asked for during the life of its token t: only
// such entries are refreshed in the background.
func (e *Entry) hot(t *cached) bool {
	return e.lastUsed.Load() >= t.issued().UnixNano()
}

// scheduleLocked sets e's timer, with Background, for its next refresh or
// idle check. e.mu must be held.
func (e *Entry) scheduleLocked(now time.Time) {
	if !e.c.Background || e.dead.Load() || e.c.closed.Load() {
		return
	}
	var at time.Time
	switch t := e.tok.Load(); {
	case t == nil:
		at = later(time.Unix(0, e.failUntil.Load()), time.Unix(0, e.lastUsed.Load()).Add(time.Second))
	case now.Before(t.refreshAt):
		at = t.refreshAt
	case now.Before(t.token.Expiry) && e.hot(t):
		at = now.Add(retryDelay(t.lifetime)) // a refresh failed or could not start
	default:
		at = later(t.token.Expiry, time.Unix(0, e.lastUsed.Load()).Add(2*t.lifetime))
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

// onTimer drops e if it is idle, refreshes it if it is due and hot, and
// otherwise sets the timer again.
func (e *Entry) onTimer() {
	if e.c.closed.Load() {
		return
	}
	now := e.c.clock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead.Load() || e.flight != nil {
		return
	}
	t := e.tok.Load()
	switch {
	case e.idle(now):
		e.dead.Store(true)
		e.c.remove(e)
		return
	case t != nil && due(t, now) && now.Before(t.token.Expiry) && e.hot(t):
		if e.startLocked(e.fetcher, true) != nil {
			return
		}
	}
	e.scheduleLocked(now)
}

// kill marks e removed from its cache and stops its timer. A flight in
// progress finishes into it.
func (e *Entry) kill() {
	e.mu.Lock()
	e.dead.Store(true)
	if e.timer != nil {
		e.timer.Stop()
	}
	e.mu.Unlock()
}
