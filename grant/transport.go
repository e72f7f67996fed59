package grant

import (
	"context"
	"io"
	"net/http"

	"golang.org/x/oauth2"
)

// Invalidator is implemented by token sources that can drop their cached
// token, such as *Source.
type Invalidator interface {
	Invalidate()
}

// Transport is an http.RoundTripper that authorises requests with a bearer
// token from Source.
//
// If the server answers 401 Unauthorized and Source implements Invalidator,
// the cached token is dropped and the request is sent once more with a new
// token, provided its body can be sent again (it has none, or GetBody is
// set, as http.NewRequest does for in-memory bodies).
//
// The token is not sent to another host a redirect leads to.
type Transport struct {
	// Source supplies the tokens. It is required.
	Source oauth2.TokenSource

	// Base sends the requests. If nil, http.DefaultTransport is used.
	Base http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	if t.Source == nil {
		closeBody()
		return nil, &ConfigError{Field: "Transport.Source", Reason: "missing"}
	}
	if redirectedElsewhere(req) {
		return t.base().RoundTrip(req)
	}
	tok, err := t.Source.Token()
	if err != nil {
		closeBody()
		return nil, err
	}
	resp, err := t.base().RoundTrip(authorised(req, tok))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	if _, ok := t.Source.(Invalidator); !ok {
		return resp, nil
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return resp, nil // the body was consumed and cannot be sent again
	}

	// Drop the refused token and try once more with a new one.
	if s, ok := t.Source.(*Source); ok {
		s.invalidate(tok)
	} else {
		t.Source.(Invalidator).Invalidate()
	}
	tok2, err := t.Source.Token()
	if err != nil {
		return resp, nil // report the 401 rather than the token failure
	}
	retry := authorised(req, tok2)
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		retry.Body = body
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return t.base().RoundTrip(retry)
}

// authorised returns a copy of req with the bearer token set, as a
// RoundTripper must not modify the request it is given.
func authorised(req *http.Request, tok *oauth2.Token) *http.Request {
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", tok.Type()+" "+tok.AccessToken)
	return r
}

// redirectedElsewhere reports whether req follows a redirect from another
// host, to which the token must not be sent.
func redirectedElsewhere(req *http.Request) bool {
	if req.Response == nil || req.Response.Request == nil {
		return false
	}
	prev := req.Response.Request.URL
	return prev.Scheme != req.URL.Scheme || prev.Host != req.URL.Host
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// Client returns an HTTP client that authorises its requests with tokens
// for req from c.TokenSource(ctx, req), through a Transport over the
// transport of c.HTTPClient. Its timeout, redirect policy and cookie jar are
// those of c.HTTPClient, or, if that is nil, a 30-second timeout and Go's
// default redirect policy.
func (c *Config) Client(ctx context.Context, req Request) *http.Client {
	hc := http.Client{Timeout: defaultHTTPClient.Timeout}
	if c.HTTPClient != nil {
		hc = *c.HTTPClient
	}
	hc.Transport = &Transport{Source: c.TokenSource(ctx, req), Base: hc.Transport}
	return &hc
}
