package grant

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"
)

// retryAfterTransport adds a Retry-After header to 503 answers.
type retryAfterTransport struct{ value string }

func (r retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusServiceUnavailable {
		resp.Header.Set("Retry-After", r.value)
	}
	return resp, err
}

// TestExchangeHonoursRetryAfter: a 503 with Retry-After is retried after
// the time the server asked for, not after the short backoff; one that asks
// for more than a minute, or for more than the deadline leaves, is not
// retried.
func TestExchangeHonoursRetryAfter(t *testing.T) {
	date := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		name      string
		value     string
		deadline  time.Duration
		wantWaits []time.Duration // the waits asked for, rounded to seconds
		wantErr   bool
	}{
		{"seconds", "7", 0, []time.Duration{7 * time.Second}, false},
		{"date", date, 0, []time.Duration{29 * time.Second}, false}, // 30 s less the date's rounding and the time elapsed
		{"too long", "300", 0, nil, true},
		{"past the deadline", "7", 2 * time.Second, nil, true},
		{"unparsable: backoff", "soon", 0, []time.Duration{0}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newEmulator(t, nil)
			cfg := testConfig(t, srv, 0)
			cfg.HTTPClient = &http.Client{Transport: retryAfterTransport{tc.value}}
			var mu sync.Mutex
			var waits []time.Duration
			cfg.wait = func(_ context.Context, d time.Duration) {
				mu.Lock()
				defer mu.Unlock()
				waits = append(waits, d.Truncate(time.Second))
			}
			srv.FailNext(1, http.StatusServiceUnavailable)
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			_, err := cfg.Exchange(ctx, testReq)
			var te *TokenError
			if tc.wantErr {
				if !errors.As(err, &te) || te.StatusCode != http.StatusServiceUnavailable || te.Attempts != 1 {
					t.Fatalf("err = %v, want the 503 after one attempt", err)
				}
				// The caller is told how long the server asked for.
				if want := map[string]time.Duration{"too long": 300 * time.Second, "past the deadline": 7 * time.Second}[tc.name]; te.RetryAfter != want {
					t.Errorf("RetryAfter = %v, want %v", te.RetryAfter, want)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(waits) != len(tc.wantWaits) {
				t.Fatalf("waits %v, want %v", waits, tc.wantWaits)
			}
			for i := range waits {
				near := tc.name == "date" && waits[i] >= 28*time.Second && waits[i] <= 30*time.Second
				if waits[i] != tc.wantWaits[i] && !near {
					t.Errorf("wait %d = %v, want %v", i, waits[i], tc.wantWaits[i])
				}
			}
		})
	}
}
