package daemon

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"
)

// How failed client authentication on TCP is answered.
const (
	authFreeFailures = 5                      // failures per address answered at once
	authWindow       = time.Minute            // a quiet minute forgets an address's failures; one log line per address per minute
	authDelayFirst   = 100 * time.Millisecond // the delay of the first slowed answer, doubling
	authDelayMax     = time.Second            // the most the delay grows to
	authWaitMax      = 10 * time.Second       // the most one answer waits, however many attempts an address makes at once
	authMaxAddresses = 4096                   // addresses tracked; beyond, one record for the rest
)

// authFailures counts failed client authentication on TCP per address (an
// IPv6 address by its /64), logs it at warn at most once a minute per
// address with the count since the last line, and slows the answers to an
// address that keeps failing: after authFreeFailures failures without a
// quiet minute between them, each further failure is answered after a
// delay that doubles from 100 ms up to 1 s, and the answers to one address
// are spaced by those delays even when its attempts come in parallel (an
// answer waits at most authWaitMax). Other addresses are not slowed, and
// nor are an address's requests with the right credentials. The
// credentials are compared before, in constant time; neither they nor the
// client id tried are ever logged.
type authFailures struct {
	// now is the clock and sleep waits for d or until ctx ends; tests
	// replace them to see the delays asked for without waiting.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration)

	mu    sync.Mutex
	addrs map[netip.Addr]*addrFailures
}

// addrFailures is the record of one address.
type addrFailures struct {
	last     time.Time // the last failure
	n        int       // failures since the last quiet minute
	unlogged int       // failures since the last log line
	logged   time.Time // the last log line
	nextAt   time.Time // the earliest the next slowed answer goes out
}

func newAuthFailures() *authFailures {
	return &authFailures{now: time.Now, sleep: sleepCtx, addrs: map[netip.Addr]*addrFailures{}}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// authFailed counts, logs and slows a failed authentication of r.
func (s *Server) authFailed(r *http.Request, form url.Values) {
	s.metrics.authFailures.Inc()
	af := s.authFail
	who := callerOf(r)
	now := af.now()
	af.mu.Lock()
	a, name, quiet := af.recordLocked(who, now)
	if now.Sub(a.last) >= authWindow {
		a.n = 0
	}
	a.n++
	a.unlogged++
	a.last = now
	var wait time.Duration
	if a.n > authFreeFailures {
		d := min(authDelayFirst<<min(a.n-authFreeFailures-1, 16), authDelayMax)
		at := a.nextAt
		if at.Before(now) {
			at = now
		}
		at = at.Add(d)
		if at.Sub(now) > authWaitMax {
			at = now.Add(authWaitMax)
		}
		a.nextAt = at
		wait = at.Sub(now)
	}
	logged := 0
	if a.logged.IsZero() || now.Sub(a.logged) >= authWindow {
		logged, a.unlogged, a.logged = a.unlogged, 0, now
	}
	af.mu.Unlock()

	lg := s.log()
	if quiet > 0 {
		lg.Warn("TCP client authentication failures not logged before, from addresses now quiet for a minute", "failures", quiet)
	}
	if logged > 0 {
		lg.Warn("TCP client authentication failed", "address", name, "failures", logged,
			"credentials", credentialsKind(r, form), "delay", wait)
	}
	if wait > 0 {
		af.sleep(r.Context(), wait)
	}
}

// recordLocked returns the record of who's address and its name. When
// authMaxAddresses are tracked, records quiet for a minute are dropped
// first (quiet counts their failures not yet logged), and if none is, the
// address shares one record with the others beyond the bound.
func (af *authFailures) recordLocked(who callerID, now time.Time) (a *addrFailures, name string, quiet int) {
	key, name := who.ip, who.String()
	if a = af.addrs[key]; a != nil {
		return a, name, 0
	}
	if len(af.addrs) >= authMaxAddresses {
		for k, r := range af.addrs {
			if now.Sub(r.last) >= authWindow {
				quiet += r.unlogged
				delete(af.addrs, k)
			}
		}
	}
	if len(af.addrs) >= authMaxAddresses {
		key, name = netip.Addr{}, "other addresses (too many to track each)"
		if a = af.addrs[key]; a != nil {
			return a, name, quiet
		}
	}
	a = &addrFailures{}
	af.addrs[key] = a
	return a, name, quiet
}

// credentialsKind says how r tried to authenticate, for the log: never
// what it sent.
func credentialsKind(r *http.Request, form url.Values) string {
	switch {
	case r.Header.Get("Authorization") != "":
		return "authorization header"
	case form.Has("client_secret") || form.Has("client_id"):
		return "form"
	}
	return "none"
}
