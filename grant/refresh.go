package grant

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// The refresh rule, described in the package documentation ("Token
// cache"). Its numbers live in these functions and nowhere else; reserve,
// margin and retryDelay take a token's lifetime l (its expires_in).

// reserve is how much of a token's lifetime l must be left for it to be
// handed out.
func reserve(l time.Duration) time.Duration {
	return min(max(l/10, time.Second), 10*time.Second, l/3)
}

// margin is how long before expiry a token of lifetime l is due for
// refresh, for the configured margin m.
func margin(m, l time.Duration) time.Duration {
	return max(min(m, l/2), 2*reserve(l))
}

// jitter is a random time below min(j, l/10) by which a refresh is moved
// earlier, so that tokens cached together are not refreshed together.
func jitter(j, l time.Duration) time.Duration {
	j = min(j, l/10)
	if j <= 0 {
		return 0
	}
	return rand.N(j)
}

// retryDelay is the wait before another try to refresh a token that is
// still valid, after a failed one.
func retryDelay(l time.Duration) time.Duration {
	return min(max(l/20, 50*time.Millisecond), 5*time.Second)
}

// cached is a cached token with the times the rule gives it. Only oauth
// changes, once: Source makes it on first use, so that the daemon, which
// never needs it, does not keep one per key.
type cached struct {
	token      *Token
	oauth      atomic.Pointer[oauth2.Token] // shared by all callers: read-only
	lifetime   time.Duration
	refreshAt  time.Time // due for refresh from then on
	serveUntil time.Time // E - reserve(L): handed out only before then
}

func (c *Cache) newCached(t *Token) *cached {
	l := time.Duration(t.ExpiresIn) * time.Second
	return &cached{
		token:      t,
		lifetime:   l,
		refreshAt:  t.Expiry.Add(-margin(c.refreshMargin(), l) - jitter(c.RefreshJitter, l)),
		serveUntil: t.Expiry.Add(-reserve(l)),
	}
}

// issued is when the request that got t started: E - L.
func (t *cached) issued() time.Time { return t.token.Expiry.Add(-t.lifetime) }

// oauthToken returns t as an *oauth2.Token, the same one on every call.
func (t *cached) oauthToken() *oauth2.Token {
	if o := t.oauth.Load(); o != nil {
		return o
	}
	t.oauth.CompareAndSwap(nil, t.token.OAuth2())
	return t.oauth.Load()
}

// backoff returns t with its refresh moved retryDelay after now, but not
// past the time it is served until.
func backoff(t *cached, now time.Time) *cached {
	r := &cached{token: t.token, lifetime: t.lifetime, serveUntil: t.serveUntil}
	if o := t.oauth.Load(); o != nil {
		r.oauth.Store(o) // so that callers that hold it can still invalidate it
	}
	r.refreshAt = now.Add(retryDelay(t.lifetime))
	if r.refreshAt.After(t.serveUntil) {
		r.refreshAt = t.serveUntil
	}
	return r
}

// Purpose is what a caller will do with a cached token. It decides which
// cached tokens it may be given.
type Purpose uint8

const (
	// ForUse is a token to send to an API. Without Cache.Background, the
	// cached token is handed out until it is due for refresh; with it,
	// while more than its reserve is left.
	ForUse Purpose = iota

	// ForExchange is a token to exchange for another that expires with it,
	// such as an Altinn token: it must also have half of its lifetime left,
	// so that the other token lives long enough.
	ForExchange
)

// usable reports whether t may be handed out for p at now.
func (c *Cache) usable(t *cached, now time.Time, p Purpose) bool {
	if t == nil || p == ForExchange && now.After(t.token.Expiry.Add(-t.lifetime/2)) {
		return false
	}
	if c.Background {
		return now.Before(t.serveUntil)
	}
	return now.Before(t.refreshAt)
}

// due reports whether t should be refreshed at now.
func due(t *cached, now time.Time) bool { return !now.Before(t.refreshAt) }
