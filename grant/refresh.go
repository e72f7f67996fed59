package grant

import (
	"math/rand/v2"
	"time"
)

// The refresh rule of Cache, the token daemon's cache, decides when a
// cached token is handed out and when it is replaced. For a token that
// lives L (its expires_in) and expires at E:
//
//   - It is handed out only while more than its reserve is left: L/10, at
//     least 1 s, at most 10 s and at most L/3 (10 s for a token of 120 s).
//   - It is due for refresh at E - margin, where margin is
//     min(Cache.RefreshMargin, L/2) but at least two reserves, moved earlier
//     by a random jitter below min(Cache.RefreshJitter, L/10). With the
//     defaults (30 s, no jitter) a token of 120 s is due at 90 s, one of
//     40 s halfway, one of 3 s after 1 s.
//   - When it is due, without Background the caller refreshes it and waits, and
//     other callers wait for the same request. With Cache.Background (the
//     daemon) callers keep getting it, until only its reserve is left, while
//     a refresh runs in the background; a timer starts that refresh at the
//     due time for every key that was asked for during the token's life.
//   - A refresh that fails while the token has more than its reserve left
//     keeps it, and the next try is L/20 later (50 ms to 5 s). With no token
//     to serve, the error goes to every waiting caller; a refusal (4xx) is
//     then remembered for Cache.RefusalTTL (the daemon: 5 s).
//   - A token to exchange for one that expires with it (the Altinn token,
//     Purpose ForExchange) must have half of its lifetime left.
//   - A key whose token expired and that nobody asked for within two
//     lifetimes is dropped. A full cache drops those first, then the least
//     recently used key; the daemon refuses the new key instead.
//
// Why these numbers: the half-lifetime cap keeps a refresh window as long
// as the token has been in use, for retries when Maskinporten fails under
// load, and for the common 120 s token it gives the same 30 s as a
// quarter-lifetime cap would. The reserve means no caller gets a token
// about to expire, and the two-reserve floor means a background refresh
// starts while the old token can still be served. The L/20 backoff is 5 s
// for every token that lives 100 s or more, and scales down for short ones.
//
// Its numbers live in these functions and nowhere else; reserve, margin and
// retryDelay take a token's lifetime l (its expires_in).

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

// cached is a cached token with the times the rule gives it.
type cached struct {
	token      *Token
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

// backoff returns t with its refresh moved retryDelay after now, but not
// past the time it is served until.
func backoff(t *cached, now time.Time) *cached {
	r := &cached{token: t.token, lifetime: t.lifetime, serveUntil: t.serveUntil}
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
