package grant

import (
	"cmp"
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// refreshMargin is how long before it expires a token is replaced (for a
// short-lived token, halfway through its life).
const refreshMargin = 30 * time.Second

// TokenSource returns an oauth2.TokenSource of Maskinporten tokens for req:
// oauth2.ReuseTokenSourceWithExpiry over Exchange, requests made with ctx.
//
// A token is reused until 30 s before it expires, or until half its life is gone if that
// comes later. If its replacement fails while it still has a tenth of its life left (at
// most 10 s), it is handed out again and the next try comes a twentieth of its life later
// (at most 5 s). One request runs at a time; other callers wait for it.
func (c *Config) TokenSource(ctx context.Context, req Request) oauth2.TokenSource {
	return c.reuse(ctx, req, false)
}

// AltinnTokenSource returns a source of Altinn tokens for req, reused as TokenSource's are,
// each exchanged (AltinnToken) for a new Maskinporten token so that it lives as long as it can.
func (c *Config) AltinnTokenSource(ctx context.Context, req Request) oauth2.TokenSource {
	return c.reuse(ctx, req, true)
}

// source is the one-method source TokenSource reuses; last and next are
// guarded by the lock of the oauth2.ReuseTokenSource that calls it.
type source struct {
	ctx    context.Context
	cfg    *Config
	req    Request
	altinn bool
	last   *oauth2.Token // the token handed out last
	next   time.Time     // no request before then while last serves
}

// Token returns the last token while it is not due, else a new one, or
// the last one while it is good if getting a new one fails.
func (s *source) Token() (*oauth2.Token, error) {
	now := s.cfg.clock()
	if s.last != nil && now.Before(s.next) {
		return s.last, nil
	}
	t, err := s.cfg.Exchange(s.ctx, s.req)
	if err == nil && s.altinn {
		t, err = s.cfg.AltinnToken(s.ctx, t.AccessToken)
	}
	if err == nil {
		life := time.Duration(t.ExpiresIn) * time.Second
		s.last, s.next = t.OAuth2(), t.Expiry.Add(-min(refreshMargin, life/2))
		return s.last, nil
	}
	if s.last != nil {
		life := time.Duration(s.last.ExpiresIn) * time.Second
		if until := s.last.Expiry.Add(-min(max(life/10, time.Second), 10*time.Second)); now.Before(until) {
			s.next = now.Add(min(max(life/20, 50*time.Millisecond), 5*time.Second, until.Sub(now)))
			s.cfg.logger().WarnContext(s.ctx, "token refresh failed; using the cached token until it expires",
				"expiry", s.last.Expiry, "error", err)
			return s.last, nil
		}
	}
	return nil, err
}

// reusing is TokenSource's source: a reused source, replaced when the signer's certificate
// changes (a new key gets a new token at once) and when Client's transport drops a token.
type reusing struct {
	src source // the template of each new source
	cur atomic.Pointer[reused]
}

type reused struct {
	oauth2.TokenSource
	leaf *x509.Certificate // the signer's leaf when it was made
}

func (c *Config) reuse(ctx context.Context, req Request, altinn bool) *reusing {
	r := &reusing{src: source{ctx: ctx, cfg: c, req: req, altinn: altinn}}
	r.cur.Store(r.fresh())
	return r
}

func (r *reusing) fresh() *reused {
	s := r.src
	return &reused{oauth2.ReuseTokenSourceWithExpiry(nil, &s, refreshMargin), r.leaf()}
}

func (r *reusing) leaf() *x509.Certificate {
	if r.src.cfg.Signer != nil {
		if chain := r.src.cfg.Signer.Chain(); len(chain) > 0 {
			return chain[0]
		}
	}
	return nil
}

// Token implements oauth2.TokenSource. A cached token is shared by all
// callers, without allocating: it must not be modified.
func (r *reusing) Token() (*oauth2.Token, error) {
	cur := r.cur.Load()
	if cur.leaf != r.leaf() {
		r.cur.CompareAndSwap(cur, r.fresh())
		cur = r.cur.Load()
	}
	return cur.Token()
}

// invalidate drops the cached token if it is still t: callers that saw the
// same refused token cause one new request, not one each.
func (r *reusing) invalidate(t *oauth2.Token) {
	cur := r.cur.Load()
	if now, err := cur.Token(); err == nil && now == t {
		r.cur.CompareAndSwap(cur, r.fresh())
	}
}

// Client returns an HTTP client that authorises its requests with tokens from
// c.TokenSource(ctx, req), over c.HTTPClient (if nil: a 30-second timeout and Go's
// defaults). If an API answers 401, the token is dropped and the request sent once more
// with a new one if its body can be sent again. Unlike oauth2.Transport, it sends no
// token to another host a redirect leads to.
func (c *Config) Client(ctx context.Context, req Request) *http.Client {
	hc := *cmp.Or(c.HTTPClient, &http.Client{Timeout: defaultHTTPClient.Timeout})
	hc.Transport = &transport{src: c.reuse(ctx, req, false), base: cmp.Or(hc.Transport, http.DefaultTransport)}
	return &hc
}

type transport struct {
	src  *reusing
	base http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if prev := req.Response; prev != nil && prev.Request != nil &&
		(prev.Request.URL.Scheme != req.URL.Scheme || prev.Request.URL.Host != req.URL.Host) {
		return t.base.RoundTrip(req) // a redirect to another host: no token
	}
	tok, err := t.src.Token()
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	resp, err := t.base.RoundTrip(authorised(req, tok))
	if err != nil || resp.StatusCode != http.StatusUnauthorized ||
		req.Body != nil && req.Body != http.NoBody && req.GetBody == nil { // the body cannot be sent again
		return resp, err
	}
	t.src.invalidate(tok)
	tok2, err := t.src.Token()
	if err != nil {
		return resp, nil // report the 401 rather than the token failure
	}
	retry := authorised(req, tok2)
	if req.GetBody != nil {
		if retry.Body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return t.base.RoundTrip(retry)
}

// authorised returns a copy of req with the bearer token set: a
// RoundTripper must not modify its request.
func authorised(req *http.Request, tok *oauth2.Token) *http.Request {
	r := req.Clone(req.Context())
	tok.SetAuthHeader(r)
	return r
}
