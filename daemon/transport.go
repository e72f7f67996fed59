package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// callInfo tells the instrumented transport what an HTTP request is for,
// for its metrics and its log line. It never holds a secret: the pid is
// masked.
type callInfo struct {
	endpoint string // "token" or "altinn"
	attrs    []slog.Attr
}

type callInfoKey struct{}

func withCallInfo(ctx context.Context, ci *callInfo) context.Context {
	return context.WithValue(ctx, callInfoKey{}, ci)
}

// instrumentedTransport counts and logs every HTTP request to Maskinporten
// and Altinn: one line per call, with the status and the duration, never a
// header or a body.
type instrumentedTransport struct {
	base http.RoundTripper
	s    *Server
}

func (t *instrumentedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ci, _ := req.Context().Value(callInfoKey{}).(*callInfo)
	if ci == nil {
		ci = &callInfo{endpoint: "token"}
	}
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	d := time.Since(start)
	t.s.metrics.upstreamTime.WithLabelValues(ci.endpoint).Observe(d.Seconds())
	attrs := make([]slog.Attr, 0, 6+len(ci.attrs))
	attrs = append(attrs, slog.String("endpoint", ci.endpoint), slog.String("url", urlWithoutQuery(req)))
	attrs = append(attrs, ci.attrs...)
	if err != nil {
		t.s.metrics.upstream.WithLabelValues(ci.endpoint, "error").Inc()
		attrs = append(attrs, slog.Duration("duration", d), slog.String("error", err.Error()))
		t.s.log().LogAttrs(req.Context(), slog.LevelWarn, "maskinporten call failed", attrs...)
		return nil, err
	}
	t.s.metrics.upstream.WithLabelValues(ci.endpoint, strconv.Itoa(resp.StatusCode)).Inc()
	attrs = append(attrs, slog.Int("status", resp.StatusCode), slog.Duration("duration", d))
	level := slog.LevelInfo
	if resp.StatusCode >= 400 {
		level = slog.LevelWarn
	}
	t.s.log().LogAttrs(req.Context(), level, "maskinporten call", attrs...)
	return resp, nil
}

func urlWithoutQuery(req *http.Request) string {
	u := *req.URL
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}

// instrumentedClient returns a client like base (or, if base is nil, like
// the grant package's default: a 30-second timeout, the proxy from the
// environment, no redirects) whose transport is instrumented.
func (s *Server) instrumentedClient(base *http.Client) *http.Client {
	var hc http.Client
	if base != nil {
		hc = *base
	} else {
		hc = http.Client{
			Timeout: 30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	hc.Transport = &instrumentedTransport{base: rt, s: s}
	return &hc
}
