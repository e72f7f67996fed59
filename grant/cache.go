package grant

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Cache holds access tokens under string keys: the token daemon's cache
// of many clients, keys and requests. Each key has an Entry, whose tokens
// come from the Fetcher it was added with.
//
// Tokens are handed out and refreshed by one rule (see refresh.go): with the defaults, a token that lives
// 120 s is replaced 30 s before it expires, and one that lives less than a
// minute halfway. One fetch per key runs at a time; callers that arrive
// meanwhile wait for it. A refresh that fails while the cached token is
// still good keeps it and is tried again a little later.
//
// The cache holds at most MaxEntries keys. Entries whose token has expired
// and that nobody asked for within two token lifetimes are dropped; when the
// cache is full, those go first, then the least recently used entry (or,
// with RefuseWhenFull, the new key is refused).
//
// The zero value is ready to use. Its fields must not be changed after
// first use. A Cache must not be copied after first use; it is safe for
// concurrent use.
type Cache struct {
	// MaxEntries bounds the number of keys. If zero, 1000.
	MaxEntries int

	// RefreshMargin is how long before expiry a token is due for refresh.
	// If zero, 30 seconds. It is never more than half of a token's
	// lifetime, nor less than twice the time a token must have left to be
	// handed out (a tenth of its lifetime, 1 to 10 seconds).
	RefreshMargin time.Duration

	// RefreshJitter is the most by which a refresh is moved earlier, at
	// random, so that tokens cached together are not refreshed together.
	// It is never more than a tenth of a token's lifetime. If zero, there
	// is none.
	RefreshJitter time.Duration

	// RefusalTTL is how long a refusal (an error matching ErrRefused) is
	// remembered for its key when there is no token to serve instead: until
	// then, callers get the same error without a request. If zero, refusals
	// are not remembered.
	RefusalTTL time.Duration

	// Background, if true, refreshes tokens ahead of expiry without making
	// callers wait: a token due for refresh is still handed out (until only
	// its reserve is left) while a refresh runs in the background, and a
	// timer starts that refresh at the due time for every key that was
	// asked for since its token was issued. Timers also drop unused keys.
	// Call Close when done with such a Cache.
	//
	// If false, the caller that finds a token due refreshes it and waits,
	// as golang.org/x/oauth2's ReuseTokenSource does, and no goroutine
	// outlives a fetch.
	Background bool

	// RefuseWhenFull, if true, makes Add refuse a new key with ErrCacheFull
	// when the cache is full and no entry is idle, instead of evicting the
	// least recently used one, so that a caller flooding the cache with new
	// keys cannot push out the tokens other callers use.
	RefuseWhenFull bool

	now func() time.Time // the clock; nil means time.Now

	mu        sync.RWMutex
	entries   map[string]*Entry
	lastSweep time.Time

	closed  atomic.Bool
	bgMu    sync.Mutex // guards starting flights against Close
	flights sync.WaitGroup
	ctx     context.Context // the flights' context, canceled by Close
	cancel  context.CancelFunc
}

// A Fetcher gets a new token for a cache entry.
type Fetcher interface {
	// Fetch gets a new token. ctx ends when the Cache is closed; Fetch adds
	// its own deadline. background is true for a refresh that no caller
	// waits for (Cache.Background).
	Fetch(ctx context.Context, background bool) (*Token, error)
}

// Errors from a Cache. They match none of the other sentinels.
var (
	// ErrCacheFull is returned by Add for a new key when the cache holds
	// MaxEntries keys, none is idle and RefuseWhenFull is set.
	ErrCacheFull = errors.New("grant: the token cache is full")

	// ErrCacheClosed is returned by Add, and for a token that must be
	// fetched, after Close.
	ErrCacheClosed = errors.New("grant: the token cache is closed")
)

const (
	defaultMaxEntries    = 1000
	defaultRefreshMargin = 30 * time.Second
	sweepInterval        = time.Minute // between sweeps of idle entries
	fullSweepInterval    = time.Second // between sweeps of a full cache
)

func (c *Cache) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

func (c *Cache) refreshMargin() time.Duration {
	if c.RefreshMargin > 0 {
		return c.RefreshMargin
	}
	return defaultRefreshMargin
}

// Lookup returns the entry for key, or nil. It does not allocate.
func (c *Cache) Lookup(key []byte) *Entry {
	c.mu.RLock()
	e := c.entries[string(key)]
	c.mu.RUnlock()
	return e
}

// Add returns the entry for key, adding one whose tokens f fetches if there
// is none. Adding to a full cache first drops idle entries, then evicts the
// least recently used one, or, with RefuseWhenFull, fails with ErrCacheFull.
// After Close it fails with ErrCacheClosed.
func (c *Cache) Add(key string, f Fetcher) (*Entry, error) {
	c.mu.RLock()
	e := c.entries[key]
	c.mu.RUnlock()
	if e != nil {
		return e, nil
	}
	if f == nil {
		return nil, &ConfigError{Field: "Fetcher", Reason: "missing"}
	}
	if c.closed.Load() {
		return nil, ErrCacheClosed
	}
	now := c.clock()
	c.mu.Lock()
	if e := c.entries[key]; e != nil {
		c.mu.Unlock()
		return e, nil
	}
	dropped, ok := c.makeRoomLocked(now)
	if ok {
		e = &Entry{c: c, key: key, fetcher: f}
		e.lastUsed.Store(now.UnixNano())
		if c.entries == nil {
			c.entries = make(map[string]*Entry)
		}
		c.entries[key] = e
	}
	c.mu.Unlock()
	for _, d := range dropped {
		d.kill()
	}
	if !ok {
		return nil, ErrCacheFull
	}
	return e, nil
}

// makeRoomLocked drops idle entries when the cache is full (at most every
// fullSweepInterval) and, without Background, whose timers drop them, every
// sweepInterval. If the cache is still full, it evicts the least recently
// used entry unless RefuseWhenFull. It returns the entries it removed, for
// the caller to kill once c.mu is released, and whether there is room for
// one more. c.mu must be held.
func (c *Cache) makeRoomLocked(now time.Time) (dropped []*Entry, ok bool) {
	max := c.MaxEntries
	if max <= 0 {
		max = defaultMaxEntries
	}
	since := now.Sub(c.lastSweep)
	if len(c.entries) >= max && since >= fullSweepInterval || !c.Background && since >= sweepInterval {
		c.lastSweep = now
		for k, e := range c.entries {
			if e.idle(now) {
				delete(c.entries, k)
				dropped = append(dropped, e)
			}
		}
	}
	if len(c.entries) < max {
		return dropped, true
	}
	if c.RefuseWhenFull {
		return dropped, false
	}
	var lru *Entry
	for _, e := range c.entries {
		if lru == nil || e.lastUsed.Load() < lru.lastUsed.Load() {
			lru = e
		}
	}
	delete(c.entries, lru.key)
	return append(dropped, lru), true
}

// remove drops e from the cache if it is still there.
func (c *Cache) remove(e *Entry) {
	c.mu.Lock()
	if c.entries[e.key] == e {
		delete(c.entries, e.key)
	}
	c.mu.Unlock()
}

// Len returns the number of keys in the cache.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// Clear drops every entry and stops their timers, and returns how many
// there were. Fetches in progress finish into the dropped entries: their
// callers still get their tokens.
func (c *Cache) Clear() int {
	c.mu.Lock()
	old := c.entries
	c.entries = nil
	c.mu.Unlock()
	for _, e := range old {
		e.kill()
	}
	return len(old)
}

// Close stops background refreshes, cancels the fetches in progress,
// drops every entry and waits for the fetches to end. Afterwards, Add and
// any request for a token that is not cached fail with ErrCacheClosed.
// Close may be called more than once.
func (c *Cache) Close() {
	c.bgMu.Lock()
	c.closed.Store(true)
	cancel := c.cancel
	c.bgMu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.Clear()
	c.flights.Wait()
}

// goFlight runs f in a goroutine that Close waits for, with the context
// Close cancels; false once the cache is closed.
func (c *Cache) goFlight(f func(ctx context.Context)) bool {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.closed.Load() {
		return false
	}
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithCancel(context.Background())
	}
	ctx := c.ctx
	c.flights.Add(1)
	go func() {
		defer c.flights.Done()
		f(ctx)
	}()
	return true
}
