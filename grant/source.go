package grant

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync/atomic"

	"golang.org/x/oauth2"
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
	authzDetails  string // the authorization_details claim: system user, consents, the caller's own
}

func (k *cacheKey) String() string {
	return strings.Join([]string{string('0' + k.kind), k.issuer, k.endpoint, k.clientID, k.keyIdentity, k.scopes,
		k.resources, k.consumerOrg, k.onBehalfOf, k.pid, k.systemUserOrg, k.authzDetails}, "\x00")
}

// Source is an oauth2.TokenSource that caches tokens from one Config for one
// Request, in a Cache entry. Make one with Config.TokenSource or
// Config.AltinnTokenSource. It is safe for concurrent use.
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
	entry *Entry
}

// TokenSource returns a token source for req that caches its token in
// c.Cache, or in a cache of its own if c.Cache is nil. ctx is used for the
// token requests; its cancellation fails them.
//
// An invalid request or Config is reported by Token, without a request.
// Token returns a cached token without allocating (but for one allocation
// the first time a new token is handed out); the *oauth2.Token is shared by
// all callers and must not be modified.
func (c *Config) TokenSource(ctx context.Context, req Request) *Source {
	return c.newSource(ctx, req, kindMaskinporten, nil)
}

func (c *Config) newSource(ctx context.Context, req Request, kind tokenKind, cache *Cache) *Source {
	if cache == nil {
		cache = c.Cache
	}
	if cache == nil {
		cache = &Cache{now: c.now}
	}
	n, err := req.normalize()
	return &Source{ctx: ctx, cfg: c, req: n, err: err, kind: kind, cache: cache}
}

// Token returns the cached token while the cache's refresh rule allows, and
// otherwise gets a new one: one request per cache key at a time, other
// callers wait for it. If a refresh fails while the cached token is still
// good, the cached token is returned and the refresh is tried again a
// little later (at most five seconds).
func (s *Source) Token() (*oauth2.Token, error) {
	if b := s.bound.Load(); b != nil && b.leaf == s.leaf() {
		if t := b.entry.fresh(s.cache.clock(), ForUse); t != nil {
			return t.oauthToken(), nil
		}
	}
	t, err := s.token(ForUse)
	if err != nil {
		return nil, err
	}
	return t.oauthToken(), nil
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

// token is the slow path of Token: a token for p from the Source's cache
// entry, fetched by s if need be.
func (s *Source) token(p Purpose) (*cached, error) {
	if s.err != nil {
		return nil, s.err
	}
	for retried := false; ; retried = true {
		e, err := s.entry()
		if err != nil {
			return nil, err
		}
		t, fl, err := e.get(s.ctx, sourceFetcher{s}, p)
		if fl != nil && fl.failed != nil && fl.by == (sourceFetcher{s}) {
			s.cfg.logger().WarnContext(s.ctx, "token refresh failed; using the cached token until it expires",
				"expiry", t.token.Expiry, "error", fl.failed)
		}
		if err != nil && !retried && fl != nil && fl.by != (sourceFetcher{s}) && s.ctx.Err() == nil &&
			(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			continue // the caller that made the request gave up; try with our context
		}
		return t, err
	}
}

// entry returns the cache entry for the Source's key, which depends on the
// signer's current certificate.
func (s *Source) entry() (*Entry, error) {
	if b := s.bound.Load(); b != nil && b.leaf == s.leaf() && !b.entry.dead.Load() {
		return b.entry, nil
	}
	k, err := s.cfg.prepare()
	if err != nil {
		return nil, err
	}
	key := s.key(k)
	e, err := s.cache.Add(key.String(), sourceFetcher{s})
	if err != nil {
		return nil, err
	}
	s.bound.Store(&binding{leaf: k.leaf, entry: e})
	return e, nil
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
		authzDetails:  string(s.req.authzDetails),
	}
	if s.kind == kindAltinn {
		key.endpoint += " " + s.cfg.Environment.AltinnExchange
	}
	return key
}

// sourceFetcher fetches a Source's tokens for the cache. It holds one
// pointer, so that making a Fetcher of it does not allocate.
type sourceFetcher struct{ s *Source }

var _ Fetcher = sourceFetcher{}

// Fetch gets a new token with the Source's context, which ctx (the cache's)
// also ends.
func (f sourceFetcher) Fetch(ctx context.Context, background bool) (*Token, error) {
	s := f.s
	rctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	t, err := s.fetch(rctx)
	if err != nil && background {
		s.cfg.logger().WarnContext(rctx, "background token refresh failed", "error", err)
	}
	return t, err
}

func (s *Source) fetch(ctx context.Context) (*Token, error) {
	k, err := s.cfg.prepare()
	if err != nil {
		return nil, err
	}
	if s.kind == kindMaskinporten {
		return s.cfg.exchange(ctx, k, s.req)
	}
	// A Maskinporten token with at least half its lifetime left, so that
	// the Altinn token, which expires with it, lives long enough.
	mt, err := s.mp.token(ForExchange)
	if err != nil {
		return nil, err
	}
	return s.cfg.AltinnToken(ctx, mt.token.AccessToken)
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
	if cur := b.entry.tok.Load(); cur != nil && cur.oauth.Load() == t {
		b.entry.tok.CompareAndSwap(cur, nil)
	}
}
