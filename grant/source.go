package grant

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

// Cache holds access tokens for many clients, keys and requests. Tokens are
// cached per environment, client id, key identity (the SHA-256 of the leaf
// certificate, or the kid), scope set, resources, consumer_org, pid,
// iss_onbehalfof and system user, so a new certificate gets a new token at
// once and one client never gets another's token.
//
// One request at a time is made per key: concurrent callers wait for it.
// Tokens are refreshed RefreshMargin before they expire. Expired tokens are
// dropped when new keys are added.
//
// The zero value is ready to use. A Cache must not be copied after first
// use; it is safe for concurrent use.
type Cache struct {
	// MaxEntries bounds the number of cached tokens. If zero, 1000.
	MaxEntries int

	// RefreshMargin is how long before expiry a token is replaced. If zero,
	// 30 seconds. It is never more than half of a token's lifetime, so a
	// token that lives less than a minute by default is replaced halfway.
	RefreshMargin time.Duration

	mu        sync.RWMutex
	entries   map[cacheKey]*entry
	lastSweep time.Time
	flights   singleflight.Group
}

const (
	defaultMaxEntries    = 1000
	defaultRefreshMargin = 30 * time.Second
	sweepInterval        = time.Minute
	failureBackoff       = 5 * time.Second // between refresh tries while a token is still valid
)

type tokenKind uint8

const (
	kindMaskinporten tokenKind = iota
	kindAltinn
)

// cacheKey identifies a token.
type cacheKey struct {
	kind          tokenKind
	issuer        string
	endpoint      string // token endpoint, or Altinn exchange URL
	clientID      string
	keyIdentity   string
	scopes        string // sorted, space-separated
	resources     string // sorted, space-separated
	consumerOrg   string
	onBehalfOf    string
	pid           string
	systemUserOrg string
}

func (k *cacheKey) String() string {
	return strings.Join([]string{string('0' + k.kind), k.issuer, k.endpoint, k.clientID, k.keyIdentity, k.scopes,
		k.resources, k.consumerOrg, k.onBehalfOf, k.pid, k.systemUserOrg}, "\x00")
}

// entry is a cache slot. Its token is replaced atomically, so that a fresh
// token is read without locks.
type entry struct {
	flight  string // the singleflight key
	created time.Time
	tok     atomic.Pointer[cached]
}

// cached is an immutable cached token.
type cached struct {
	token     *Token
	oauth     *oauth2.Token // shared by all callers: read-only
	refreshAt time.Time
	lifetime  time.Duration
}

func (c *Cache) margin(lifetime time.Duration) time.Duration {
	m := c.RefreshMargin
	if m <= 0 {
		m = defaultRefreshMargin
	}
	return min(m, lifetime/2)
}

func (c *Cache) newCached(t *Token) *cached {
	lifetime := time.Duration(t.ExpiresIn) * time.Second
	return &cached{
		token:     t,
		oauth:     t.OAuth2(),
		refreshAt: t.Expiry.Add(-c.margin(lifetime)),
		lifetime:  lifetime,
	}
}

// entry returns the entry for key, adding it if there is none.
func (c *Cache) entry(key cacheKey, now time.Time) *entry {
	c.mu.RLock()
	e := c.entries[key]
	c.mu.RUnlock()
	if e != nil {
		return e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[key]; e != nil {
		return e
	}
	if c.entries == nil {
		c.entries = make(map[cacheKey]*entry)
	}
	c.sweepLocked(now)
	e = &entry{flight: key.String(), created: now}
	c.entries[key] = e
	return e
}

// sweepLocked drops expired tokens (and slots that stayed empty for a
// while) every sweepInterval or when the cache is full, then, if it is still
// full, the token closest to expiry.
func (c *Cache) sweepLocked(now time.Time) {
	max := c.MaxEntries
	if max <= 0 {
		max = defaultMaxEntries
	}
	if len(c.entries) < max && now.Sub(c.lastSweep) < sweepInterval {
		return
	}
	c.lastSweep = now
	for k, e := range c.entries {
		if t := e.tok.Load(); t == nil && now.Sub(e.created) > sweepInterval || t != nil && !now.Before(t.token.Expiry) {
			delete(c.entries, k)
		}
	}
	for len(c.entries) >= max {
		var oldest cacheKey
		var at time.Time
		first := true
		for k, e := range c.entries {
			exp := e.created
			if t := e.tok.Load(); t != nil {
				exp = t.token.Expiry
			}
			if first || exp.Before(at) {
				oldest, at, first = k, exp, false
			}
		}
		delete(c.entries, oldest)
	}
}

// Len returns the number of tokens and token slots in the cache.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// Source is an oauth2.TokenSource that caches tokens from one Config for one
// Request. Make one with Config.TokenSource or Config.AltinnTokenSource. It
// is safe for concurrent use.
type Source struct {
	ctx   context.Context
	cfg   *Config
	req   *normRequest
	err   error // from validating the request
	kind  tokenKind
	cache *Cache
	mp    *Source // for kindAltinn: the Maskinporten token source

	bound atomic.Pointer[binding]
}

var _ oauth2.TokenSource = (*Source)(nil)

// binding is the cache entry a Source found for its key, and the leaf
// certificate the key was computed from.
type binding struct {
	leaf  *x509.Certificate
	entry *entry
}

// TokenSource returns a token source for req that caches its token in
// c.Cache, or in a cache of its own if c.Cache is nil. ctx is used for the
// token requests; its cancellation fails them.
//
// An invalid request or Config is reported by Token, without a request.
// Token returns a cached token without allocating; the *oauth2.Token is
// shared by all callers and must not be modified.
func (c *Config) TokenSource(ctx context.Context, req Request) *Source {
	return c.newSource(ctx, req, kindMaskinporten, nil)
}

func (c *Config) newSource(ctx context.Context, req Request, kind tokenKind, cache *Cache) *Source {
	if cache == nil {
		cache = c.Cache
	}
	if cache == nil {
		cache = new(Cache)
	}
	n, err := req.normalize()
	return &Source{ctx: ctx, cfg: c, req: n, err: err, kind: kind, cache: cache}
}

// Token returns a cached token while it is fresh, and otherwise gets a new
// one: one request per cache key at a time, other callers wait for it. If
// a refresh fails while the cached token is still valid, the cached token
// is returned and the refresh is tried again after five seconds.
func (s *Source) Token() (*oauth2.Token, error) {
	if b := s.bound.Load(); b != nil && b.leaf == s.leaf() {
		if t := b.entry.tok.Load(); t != nil && s.cfg.clock().Before(t.refreshAt) {
			return t.oauth, nil
		}
	}
	t, err := s.token(false)
	if err != nil {
		return nil, err
	}
	return t.oauth, nil
}

// leaf returns the signer's current leaf certificate, or nil.
func (s *Source) leaf() *x509.Certificate {
	if s.cfg.Signer == nil {
		return nil
	}
	if chain := s.cfg.Signer.Chain(); len(chain) > 0 {
		return chain[0]
	}
	return nil
}

// token is the slow path of Token. A cached token is used if it is before
// its refresh time and, if halfLife is set, has at least half of its
// lifetime left.
func (s *Source) token(halfLife bool) (*cached, error) {
	if s.err != nil {
		return nil, s.err
	}
	k, err := s.cfg.prepare()
	if err != nil {
		return nil, err
	}
	e := s.cache.entry(s.key(k), s.cfg.clock())
	s.bound.Store(&binding{leaf: k.leaf, entry: e})

	usable := func(t *cached) bool {
		if t == nil {
			return false
		}
		now := s.cfg.clock()
		if halfLife && !now.Add(t.lifetime/2).Before(t.token.Expiry) {
			return false
		}
		return now.Before(t.refreshAt)
	}
	if t := e.tok.Load(); usable(t) {
		return t, nil
	}
	fetch := func() (any, error) {
		if t := e.tok.Load(); usable(t) {
			return t, nil
		}
		tok, err := s.fetch(k)
		if err != nil {
			old := e.tok.Load()
			now := s.cfg.clock()
			if old != nil && now.Before(old.token.Expiry) {
				s.cfg.logger().WarnContext(s.ctx, "token refresh failed; using the cached token until it expires", "expiry", old.token.Expiry, "error", err)
				retry := *old
				retry.refreshAt = now.Add(failureBackoff)
				if retry.refreshAt.After(old.token.Expiry) {
					retry.refreshAt = old.token.Expiry
				}
				e.tok.CompareAndSwap(old, &retry)
				return old, nil
			}
			return nil, err
		}
		t := s.cache.newCached(tok)
		e.tok.Store(t)
		return t, nil
	}
	v, err, shared := s.cache.flights.Do(e.flight, fetch)
	if err != nil && shared && s.ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// The caller that made the request gave up; try with our context.
		v, err, _ = s.cache.flights.Do(e.flight, fetch)
	}
	if err != nil {
		return nil, err
	}
	return v.(*cached), nil
}

func (s *Source) key(k *keyInfo) cacheKey {
	key := cacheKey{
		kind:          s.kind,
		issuer:        s.cfg.Environment.Issuer,
		endpoint:      s.cfg.Environment.TokenEndpoint,
		clientID:      s.cfg.ClientID,
		keyIdentity:   k.identity,
		scopes:        s.req.scopeKey,
		resources:     s.req.resourceKey,
		consumerOrg:   s.req.consumerOrg,
		onBehalfOf:    s.req.onBehalfOf,
		pid:           s.req.pid,
		systemUserOrg: s.req.systemUser,
	}
	if s.kind == kindAltinn {
		key.endpoint += " " + s.cfg.Environment.AltinnExchange
	}
	return key
}

func (s *Source) fetch(k *keyInfo) (*Token, error) {
	if s.kind == kindMaskinporten {
		return s.cfg.exchange(s.ctx, k, s.req)
	}
	// Use a Maskinporten token with at least half its lifetime left, so
	// that the Altinn token, which expires with it, lives long enough.
	mt, err := s.mp.token(true)
	if err != nil {
		return nil, err
	}
	return s.cfg.AltinnToken(s.ctx, mt.token.AccessToken)
}

// Invalidate drops the cached token, so that the next call to Token gets a
// new one. Use it when an API refuses the token.
func (s *Source) Invalidate() {
	if b := s.bound.Load(); b != nil {
		b.entry.tok.Store(nil)
	}
}

// invalidate drops the cached token if it is still t, so that callers that
// saw the same refused token cause one new request, not one each.
func (s *Source) invalidate(t *oauth2.Token) {
	b := s.bound.Load()
	if b == nil {
		return
	}
	if cur := b.entry.tok.Load(); cur != nil && cur.oauth == t {
		b.entry.tok.CompareAndSwap(cur, nil)
	}
}
