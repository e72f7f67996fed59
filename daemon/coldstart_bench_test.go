package daemon_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/daemon"
)

// inflight counts the requests to Maskinporten under way, and the most
// there ever were at once.
type inflight struct {
	base      http.RoundTripper
	now, peak atomic.Int64
	total     atomic.Int64
}

func (c *inflight) RoundTrip(r *http.Request) (*http.Response, error) {
	n := c.now.Add(1)
	c.total.Add(1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	defer c.now.Add(-1)
	return c.base.RoundTrip(r)
}

// BenchmarkColdStart asks a cold daemon for 1,000 different tokens at once
// (one resource each, so 1,000 cache keys) and reports the time until all
// are served, and the peak number of Maskinporten requests in flight, which
// must not pass MaxConcurrent (default 4).
func BenchmarkColdStart(b *testing.B) {
	const keys = 1000
	var peak, total int64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		counter := &inflight{base: http.DefaultTransport}
		f := newFixture(b, options{noTCP: true, modify: func(c *daemon.Config) {
			c.Grant.HTTPClient = &http.Client{Transport: counter, Timeout: 30 * time.Second}
			c.MaxResourcesPerCaller = -1 // 1,000 resources from one caller
		}})
		client := unixClient(f.sock)
		client.Transport.(*http.Transport).MaxIdleConnsPerHost = 256
		errs := make(chan error, keys)
		var wg sync.WaitGroup
		b.StartTimer()
		for k := 0; k < keys; k++ {
			wg.Add(1)
			go func(k int) {
				defer wg.Done()
				form := scopeForm("test:read", "resource", fmt.Sprintf("https://api.example/cold/%d", k))
				req, _ := http.NewRequest(http.MethodPost, "http://mp-hsm/token", strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("key %d: status %d", k, resp.StatusCode)
				}
			}(k)
		}
		wg.Wait()
		b.StopTimer()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		if p := counter.peak.Load(); p > peak {
			peak = p
		}
		total += counter.total.Load()
		client.CloseIdleConnections()
		b.StartTimer()
	}
	b.ReportMetric(float64(peak), "peak-inflight")
	b.ReportMetric(float64(total)/float64(b.N), "mp-requests/op")
	b.ReportMetric(4, "max-concurrent-limit") // daemon.Config's default MaxConcurrent
}
