package daemon

import (
	"context"
	"errors"
	"log/slog"
	"strings"
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
	req    grant.Request
	altinn bool
	mpKey  string   // for an Altinn request: the key of its Maskinporten token
	owner  callerID // who added the key: its exchanges use this caller's share
}

var _ grant.Fetcher = (*request)(nil)

// notReadyError is returned for a token that cannot be served from the
// cache while the daemon is not ready.
type notReadyError struct{ reason string }

func (e *notReadyError) Error() string { return e.reason }

// token returns e's token, from the cache or from a fetch that it starts
// or joins, waiting for it no longer than ctx and timeout (if positive)
// allow. hit reports a cached answer.
func (s *Server) token(ctx context.Context, timeout time.Duration, e *grant.Entry) (t *grant.Token, hit bool, err error) {
	if t, ok := e.Cached(grant.ForUse); ok {
		return t, true, nil
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
	t, err := r.exchange(ctx)
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
func (r *request) exchange(ctx context.Context) (*grant.Token, error) {
	s := r.s
	c := s.cur.Load()
	if c == nil {
		return nil, s.notReady()
	}
	if !r.altinn {
		ctx = withCallInfo(ctx, &callInfo{endpoint: "token", attrs: r.attrs()})
		if err := s.adm.acquire(ctx, r.owner); err != nil {
			return nil, err
		}
		defer s.adm.release(r.owner)
		return c.grant.Exchange(ctx, r.req)
	}
	if c.grant.Environment.AltinnExchange == "" {
		return nil, &grant.ConfigError{Field: "Environment.AltinnExchange", Reason: "this environment has no Altinn token exchange; give its URL"}
	}
	mp, err := s.cache.Add(r.mpKey, &request{s: s, req: r.req, mpKey: r.mpKey, owner: r.owner})
	if err != nil {
		return nil, err
	}
	mt, _, err := mp.Token(ctx, grant.ForExchange)
	if err != nil {
		return nil, err
	}
	ctx = withCallInfo(ctx, &callInfo{endpoint: "altinn", attrs: r.attrs()})
	if err := s.adm.acquire(ctx, r.owner); err != nil {
		return nil, err
	}
	defer s.adm.release(r.owner)
	return c.grant.AltinnToken(ctx, mt.AccessToken)
}

// attrs describe r for logs: never the pid in clear.
func (r *request) attrs() []slog.Attr {
	a := []slog.Attr{slog.String("scope", strings.Join(r.req.Scopes, " "))}
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
	if r.altinn {
		a = append(a, slog.Bool("altinn", true))
	}
	return a
}
