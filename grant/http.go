package grant

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/textsafe"
)

// defaultHTTPClient is used when Config.HTTPClient is nil. It does not follow
// redirects: following a 307 would post the grant to another URL.
var defaultHTTPClient = &http.Client{
	Timeout:       30 * time.Second,
	Transport:     http.DefaultTransport, // honours HTTP(S)_PROXY and NO_PROXY
	CheckRedirect: noRedirect,
}

// noRedirect answers a redirect with itself: send sets it on every client,
// the caller's too.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

var discardLogger = slog.New(slog.DiscardHandler)

func (c *Config) logger() *slog.Logger { return cmp.Or(c.Logger, discardLogger) }

func (c *Config) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// excerpt returns the start of an unexpected text as one line, escaped by
// the project's one rule for text from a server.
func excerpt(s string) string { return textsafe.Escape(strings.TrimSpace(s)) }

// The retry policy for network errors and 5xx answers.
const (
	maxAttempts      = 3
	defaultRetryBase = 250 * time.Millisecond
	maxRetryAfter    = 60 * time.Second // a server asking for longer is not retried
	skewThreshold    = 5 * time.Second
	maxBody          = 1 << 20 // the largest response body read
)

// answer is an HTTP answer, its body read.
type answer struct {
	url      string
	status   int
	header   http.Header
	body     []byte
	start    time.Time     // local clock when the answered attempt started
	skew     time.Duration // server clock minus local clock, if over skewThreshold
	attempts int
}

// send makes up to maxAttempts requests, each built anew by build (a new grant each time),
// retrying network errors and 5xx answers after a backoff with jitter within ctx.
func (c *Config) send(ctx context.Context, endpoint string, build func() (*http.Request, error)) (*answer, error) {
	log := c.logger()
	hc := *cmp.Or(c.HTTPClient, defaultHTTPClient)
	hc.CheckRedirect = noRedirect // a 307 or 308 would post the grant to its Location
	var lastErr error
	var last5xx *answer
	attempt := 0
	for {
		attempt++
		req, err := build()
		if err != nil {
			return nil, err
		}
		start := c.clock()
		last5xx, lastErr = nil, nil
		if resp, err := hc.Do(req); err != nil {
			lastErr = err
			log.DebugContext(ctx, "http request failed", "url", endpoint, "attempt", attempt, "error", err)
		} else {
			body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
			resp.Body.Close()
			tooLarge := len(body) > maxBody
			if tooLarge {
				body = nil
			}
			a := &answer{url: endpoint, status: resp.StatusCode, header: resp.Header, body: body, start: start, attempts: attempt,
				skew: c.skew(ctx, resp.Header)}
			log.DebugContext(ctx, "http answer", "url", endpoint, "attempt", attempt, "status", resp.StatusCode, "duration", c.clock().Sub(start))
			switch {
			case tooLarge && resp.StatusCode < 500:
				return nil, &ResponseError{URL: endpoint, StatusCode: resp.StatusCode, Reason: "body larger than 1 MiB"}
			case err != nil:
				lastErr = err
			case resp.StatusCode < 500:
				return a, nil
			default:
				last5xx = a
			}
		}
		if attempt >= cmp.Or(c.attempts, maxAttempts) || ctx.Err() != nil {
			break
		}
		delay := c.backoff(attempt)
		if last5xx != nil {
			// A server that says when to come back is not asked sooner, nor
			// waited for beyond reason.
			if ra, ok := retryAfter(last5xx.header, c.clock()); ok {
				if ra > maxRetryAfter {
					log.DebugContext(ctx, "not retried: Retry-After too long", "url", endpoint, "retry_after", ra)
					break
				}
				delay = max(delay, ra)
			}
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			break
		}
		if c.sleep(ctx, delay); ctx.Err() != nil {
			break
		}
	}
	if last5xx != nil {
		return nil, tokenError(last5xx)
	}
	if ctx.Err() != nil && !errors.Is(lastErr, ctx.Err()) {
		lastErr = errors.Join(lastErr, ctx.Err())
	}
	return nil, &unavailableError{url: endpoint, attempts: attempt, err: lastErr}
}

func (c *Config) sleep(ctx context.Context, d time.Duration) {
	if c.wait != nil {
		c.wait(ctx, d)
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// backoff returns the wait before attempt+1: the base doubled per attempt,
// the upper half drawn at random.
func (c *Config) backoff(attempt int) time.Duration {
	d := cmp.Or(c.retryBase, defaultRetryBase) << (attempt - 1)
	return d/2 + rand.N(d/2+1)
}

// skew returns the server's clock minus the local clock from a Date header,
// or zero when it is within skewThreshold or unknown.
func (c *Config) skew(ctx context.Context, h http.Header) time.Duration {
	t, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		return 0
	}
	d := t.Sub(c.clock()).Truncate(time.Second)
	if d >= -skewThreshold && d <= skewThreshold {
		return 0
	}
	c.logger().DebugContext(ctx, "clock skew", "server_minus_local", d)
	return d
}
