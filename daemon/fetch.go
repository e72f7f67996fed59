package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
)

// request is what one cache key asks for, and how its tokens are fetched.
type request struct {
	s      *Server
	client string // the name of the client whose grant is signed
	req    grant.Request
	altinn bool
	mpKey  string // for an Altinn request: the key of its Maskinporten token

	by atomic.Pointer[callerID] // whose share of the slots a fetch runs on
}

func newRequest(s *Server, client string, req grant.Request, altinn bool, who callerID) *request {
	r := &request{s: s, client: client, req: req, altinn: altinn}
	r.by.Store(&who)
	return r
}

// addKey adds c's key to the cache within its caller's quotas.
func (s *Server) addKey(c *call) (*entry, error) {
	req := c.req // its lists are the pooled call's
	req.Scopes, req.Resources = slices.Clone(req.Scopes), slices.Clone(req.Resources)
	f := newRequest(s, c.client.Name, req, c.altinn, c.who)
	if c.altinn {
		_, rest, _ := strings.Cut(string(c.key), "\x00")
		f.mpKey = "mp\x00" + rest
	}
	return s.quotas.add(s.cache, c.who, string(c.key), f, c.st)
}

// quotas bound what one caller may add to the cache (MaxKeysPerCaller: 503;
// MaxResourcesPerCaller: 400 invalid_target), so that none fills MaxKeys for the
// others; a key counts for each caller that added it while its entry is cached.
type quotas struct {
	mu      sync.Mutex
	callers map[callerID]held
	swept   time.Time // every caller's keys pruned, once a minute
}

type held map[string]*entry // the keys one caller added, with their entries

func (q *quotas) add(cache *cache, who callerID, key string, f *request, st *settings) (*entry, error) {
	maxKeys, maxRes := st.cfg.MaxKeysPerCaller, st.maxRes
	q.mu.Lock()
	defer q.mu.Unlock()
	if now := time.Now(); now.Sub(q.swept) >= time.Minute {
		q.swept = now
		for id, h := range q.callers {
			if h.prune(cache); len(h) == 0 {
				delete(q.callers, id)
			}
		}
	}
	h := q.callers[who]
	if h == nil {
		h = held{}
		q.callers[who] = h
	}
	delete(h, key) // the cache missed it: the entry it was held for is gone
	res := f.req.Resources
	// over reports the bounds res would pass, and the resources h holds.
	over := func() (keys, resources bool, n int) {
		if keys = maxKeys > 0 && len(h) >= maxKeys; maxRes <= 0 {
			return keys, false, 0 // no resource bound: no set of up to MaxKeysPerCaller entries' resources
		}
		set := map[string]bool{}
		for _, e := range h {
			for _, r := range e.req.req.Resources {
				set[r] = true
			}
		}
		n = len(set)
		for _, r := range res {
			set[r] = true
		}
		return keys, len(set) > maxRes, n
	}
	if k, r, _ := over(); k || r {
		h.prune(cache)
	}
	switch keys, resources, n := over(); {
	case resources:
		return nil, badRequest(errInvalidTarget, fmt.Sprintf(
			"%s already has tokens for %d distinct resources, the most one caller may have (--max-resources-per-caller %d); "+
				"ask for fewer distinct resources, or ask the daemon's operator to allow them (--allowed-resources)",
			who, n, maxRes))
	case keys:
		return nil, unavailable(fmt.Sprintf("%s has %d distinct requests cached, the most one caller may have (--max-keys-per-caller); "+
			"a request nobody asks for is dropped after two token lifetimes", who, len(h)), 30)
	}
	e, err := cache.add(key, f)
	if err == nil {
		h[key] = e
	}
	return e, err
}

// prune forgets the keys whose entries are no longer in c.
func (h held) prune(c *cache) {
	for k, e := range h {
		if c.lookup([]byte(k)) != e {
			delete(h, k)
		}
	}
}

// tokenOf returns e's token for c: cached (hit), or fetched within RequestTimeout.
func (s *Server) tokenOf(e *entry, c *call) (*cached, bool, error) {
	if t := e.cached(forUse); t != nil {
		return t, true, nil
	}
	s.claim(e.req, c.who)
	ctx, cancel := context.WithTimeout(c.r.Context(), c.st.cfg.RequestTimeout)
	defer cancel()
	return e.token(ctx, forUse)
}

// claim makes r's next fetch, or one waiting for a slot, run for who.
func (s *Server) claim(r *request, who callerID) {
	r.by.Store(&who)
	s.adm.offer(r, who)
}

// fetch makes r's exchange within ExchangeTimeout, once more after a
// reconnect if its signature met a card fault (that grant was never sent).
func (r *request) fetch(ctx context.Context, background bool) (*grant.Token, error) {
	s := r.s
	ctx, cancel := context.WithTimeout(ctx, s.settings().cfg.ExchangeTimeout)
	defer cancel()
	who := refreshCaller
	if !background {
		who = *r.by.Load()
	}
	c := s.stat.Load().conn
	t, err := r.exchange(ctx, who)
	if err != nil && isDeviceFault(err) && s.awaitReconnect(ctx, c) {
		t, err = r.exchange(ctx, who)
	}
	if nre := notReadyError(""); errors.As(err, &nre) {
		return nil, err // /readyz says why
	}
	if background {
		s.metrics.refreshes.WithLabelValues(map[bool]string{true: "ok", false: "error"}[err == nil]).Inc()
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log().LogAttrs(ctx, slog.LevelWarn, "no token", append(r.attrs(), slog.String("error", err.Error()), slog.Bool("background", background))...)
	}
	return t, err
}

// exchange gets r's token from Maskinporten, or from Altinn with a Maskinporten
// token that has half its life left.
func (r *request) exchange(ctx context.Context, who callerID) (*grant.Token, error) {
	s := r.s
	c := s.stat.Load().conn
	if c == nil {
		_, reason := s.Ready()
		return nil, notReadyError(cmp.Or(reason, "not ready"))
	}
	gc := c.grants[r.client]
	if gc == nil {
		return nil, notReadyError("the client '" + r.client + "' is no longer configured")
	}
	endpoint, mpToken := "token", ""
	if r.altinn {
		if gc.Environment.AltinnExchange == "" {
			return nil, &grant.ConfigError{Field: "Environment.AltinnExchange", Reason: "this environment has no Altinn token exchange; give its URL"}
		}
		mp, err := s.cache.add(r.mpKey, newRequest(s, r.client, r.req, false, who))
		if err != nil {
			return nil, err
		}
		s.claim(mp.req, who)
		mt, _, err := mp.token(ctx, forExchange)
		if err != nil {
			return nil, err
		}
		endpoint, mpToken = "altinn", mt.token.AccessToken
	}
	ctx = context.WithValue(ctx, callInfoKey{}, &callInfo{endpoint: endpoint, attrs: r.attrs()})
	who, err := s.adm.acquire(ctx, who, r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errSlotWait, err)
	}
	defer s.adm.release(who)
	if r.altinn {
		return gc.AltinnToken(ctx, mpToken)
	}
	return gc.Exchange(ctx, r.req)
}

// attrs describe r for logs: the pid masked, of authorization_details the
// types and consent ids only (a consent's from may be a person's number).
func (r *request) attrs() []slog.Attr {
	q := r.req
	var types, ids []string
	details, _ := grant.ParseAuthorizationDetails(q.AuthorizationDetails)
	for _, d := range details {
		types = append(types, d.Type)
		if d.Consent.ID != "" {
			ids = append(ids, d.Consent.ID)
		}
	}
	if q.PID != "" {
		q.PID = grant.MaskPID(q.PID)
	}
	a := []slog.Attr{slog.String("client", r.client), slog.String("scope", strings.Join(q.Scopes, " "))}
	for _, kv := range [][2]string{{"resource", strings.Join(q.Resources, " ")}, {"consumer_org", q.ConsumerOrg}, {"pid", q.PID},
		{"system_user_org", q.SystemUserOrg}, {"authorization_types", strings.Join(types, " ")}, {"consent_id", strings.Join(ids, " ")}} {
		if kv[1] != "" {
			a = append(a, slog.String(kv[0], kv[1]))
		}
	}
	if r.altinn {
		a = append(a, slog.Bool("altinn", true))
	}
	return a
}

type callInfo struct { // tells the instrumented transport what a call is for
	endpoint string // "token" or "altinn"
	attrs    []slog.Attr
}

type callInfoKey struct{}

// instrumentedClient returns base (or grant's default: 30 s, no redirects)
// counting and logging every call, never a header or a body.
func (s *Server) instrumentedClient(base *http.Client) *http.Client {
	hc := http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if base != nil {
		hc = *base
	}
	rt := cmp.Or(hc.Transport, http.DefaultTransport)
	hc.Transport = roundTripper(func(req *http.Request) (*http.Response, error) {
		ci, _ := req.Context().Value(callInfoKey{}).(*callInfo)
		if ci == nil {
			ci = &callInfo{endpoint: "token"}
		}
		start := time.Now()
		resp, err := rt.RoundTrip(req)
		d := time.Since(start)
		s.metrics.upstreamTime.WithLabelValues(ci.endpoint).Observe(d.Seconds())
		u := *req.URL
		u.RawQuery, u.User, u.Fragment = "", nil, ""
		attrs := append([]slog.Attr{slog.String("endpoint", ci.endpoint), slog.String("url", u.String())}, ci.attrs...)
		msg, status, level := "maskinporten call failed", "error", slog.LevelWarn
		if err != nil {
			attrs = append(attrs, slog.Duration("duration", d), slog.String("error", err.Error()))
		} else {
			msg, status = "maskinporten call", strconv.Itoa(resp.StatusCode)
			attrs = append(attrs, slog.Int("status", resp.StatusCode), slog.Duration("duration", d))
			if resp.StatusCode < 400 {
				level = slog.LevelInfo
			}
		}
		s.metrics.upstream.WithLabelValues(ci.endpoint, status).Inc()
		s.log().LogAttrs(req.Context(), level, msg, attrs...)
		return resp, err
	})
	return &hc
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
