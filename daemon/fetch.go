package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
)

// newCache returns the daemon's token cache: grant's one cache, refreshing
// the tokens callers use in the background, and refusing new keys rather
// than evicting used ones when it holds MaxKeys.
func newCache(cfg Config) *grant.Cache {
	return &grant.Cache{
		MaxEntries:     cfg.MaxKeys,
		RefreshMargin:  cfg.RefreshMargin,
		RefreshJitter:  cfg.RefreshJitter,
		RefusalTTL:     max(cfg.RefusalTTL, 0),
		Background:     true,
		RefuseWhenFull: true,
	}
}

// request is what one cache key asks for, and the grant.Fetcher of its
// entry.
type request struct {
	s      *Server
	client string // the name of the client whose grant is signed
	req    grant.Request
	altinn bool
	mpKey  string // for an Altinn request: the key of its Maskinporten token

	// by is the caller whose request found no token to serve: the next
	// fetch that a caller waits for uses its share of the slots (see
	// admission). At first, the caller that added the key.
	by atomic.Pointer[callerID]
}

// newRequest returns the fetcher of a key that who adds.
func newRequest(s *Server, client string, req grant.Request, altinn bool, who callerID) *request {
	r := &request{s: s, client: client, req: req, altinn: altinn}
	r.by.Store(&who)
	return r
}

// caller returns whom a fetch is for: background refreshes are the
// daemon's own (refreshCaller).
func (r *request) caller(background bool) callerID {
	if background {
		return refreshCaller
	}
	if who := r.by.Load(); who != nil {
		return *who
	}
	return callerID{uid: -1}
}

var _ grant.Fetcher = (*request)(nil)

// notReadyError is returned for a token that cannot be served from the
// cache while the daemon is not ready.
type notReadyError struct{ reason string }

func (e *notReadyError) Error() string { return e.reason }

// token returns e's token for r, from the cache or from a fetch that it
// starts for r's caller or joins, waiting for it no longer than ctx and
// timeout (if positive) allow. hit reports a cached answer.
func (s *Server) token(ctx context.Context, timeout time.Duration, e *grant.Entry, r *http.Request) (t *grant.Token, hit bool, err error) {
	if t, ok := e.Cached(grant.ForUse); ok {
		return t, true, nil
	}
	if f, ok := e.Fetcher().(*request); ok {
		who := callerOf(r)
		f.by.Store(&who)    // a fetch this starts is for r's caller,
		s.adm.offer(f, who) // and one that waits may run on its share
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return e.Token(ctx, grant.ForUse)
}

// Fetch implements grant.Fetcher: it makes the exchange for r within
// ExchangeTimeout, counts background refreshes and logs failures.
func (r *request) Fetch(ctx context.Context, background bool) (*grant.Token, error) {
	s := r.s
	ctx, cancel := context.WithTimeout(ctx, s.settings().cfg.ExchangeTimeout)
	defer cancel()
	c := s.status().conn
	t, err := r.exchange(ctx, r.caller(background))
	if err != nil && isDeviceFault(err) && !isPINError(err) && s.awaitReconnect(ctx, c) {
		// The card or HSM failed under this request and is back: one more
		// try, with the new session, rather than a 503.
		t, err = r.exchange(ctx, r.caller(background))
	}
	var nre *notReadyError
	if errors.As(err, &nre) {
		return nil, err // /readyz says why; retried by the cache
	}
	if background {
		if err != nil {
			s.metrics.refreshes.WithLabelValues("error").Inc()
		} else {
			s.metrics.refreshes.WithLabelValues("ok").Inc()
		}
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log().LogAttrs(ctx, slog.LevelWarn, "no token", append(r.attrs(), slog.String("error", err.Error()), slog.Bool("background", background))...)
	}
	return t, err
}

// exchange gets a new token for r from Maskinporten, or for an Altinn
// request from Altinn with a Maskinporten token that has half its life left.
func (r *request) exchange(ctx context.Context, who callerID) (*grant.Token, error) {
	s := r.s
	c := s.status().conn
	if c == nil {
		return nil, s.notReady()
	}
	gc, err := c.grantFor(r.client)
	if err != nil {
		return nil, err
	}
	if !r.altinn {
		ctx = withCallInfo(ctx, &callInfo{endpoint: "token", attrs: r.attrs()})
		who, err := s.adm.acquire(ctx, who, r)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errSlotWait, err)
		}
		defer s.adm.release(who)
		return gc.Exchange(ctx, r.req)
	}
	if gc.Environment.AltinnExchange == "" {
		return nil, &grant.ConfigError{Field: "Environment.AltinnExchange", Reason: "this environment has no Altinn token exchange; give its URL"}
	}
	mp, err := s.cache.Add(r.mpKey, newRequest(s, r.client, r.req, false, who))
	if err != nil {
		return nil, err
	}
	if f, ok := mp.Fetcher().(*request); ok {
		f.by.Store(&who)
		s.adm.offer(f, who)
	}
	mt, _, err := mp.Token(ctx, grant.ForExchange)
	if err != nil {
		return nil, err
	}
	ctx = withCallInfo(ctx, &callInfo{endpoint: "altinn", attrs: r.attrs()})
	who, err = s.adm.acquire(ctx, who, r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errSlotWait, err)
	}
	defer s.adm.release(who)
	return gc.AltinnToken(ctx, mt.AccessToken)
}

// attrs describe r for logs: never the pid in clear.
func (r *request) attrs() []slog.Attr {
	a := []slog.Attr{slog.String("client", r.client), slog.String("scope", strings.Join(r.req.Scopes, " "))}
	if len(r.req.Resources) > 0 {
		a = append(a, slog.String("resource", strings.Join(r.req.Resources, " ")))
	}
	if r.req.ConsumerOrg != "" {
		a = append(a, slog.String("consumer_org", r.req.ConsumerOrg))
	}
	if r.req.PID != "" {
		a = append(a, slog.String("pid", grant.MaskPID(r.req.PID)))
	}
	if r.req.SystemUserOrg != "" {
		a = append(a, slog.String("system_user_org", r.req.SystemUserOrg))
	}
	if len(r.req.AuthorizationDetails) > 0 {
		// The types and consent ids only: a consent's from may be a
		// person's identity number.
		var types, ids []string
		details, _ := grant.ParseAuthorizationDetails(r.req.AuthorizationDetails)
		for _, d := range details {
			types = append(types, d.Type)
			if d.Consent.ID != "" {
				ids = append(ids, d.Consent.ID)
			}
		}
		a = append(a, slog.String("authorization_types", strings.Join(types, " ")))
		if len(ids) > 0 {
			a = append(a, slog.String("consent_id", strings.Join(ids, " ")))
		}
	}
	if r.altinn {
		a = append(a, slog.Bool("altinn", true))
	}
	return a
}
