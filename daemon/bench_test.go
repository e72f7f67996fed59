package daemon_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/daemon"
)

// BenchmarkServeCachedToken compares, over loopback TCP with keep-alive,
// the daemon answering POST /token from its cache (Basic auth, form
// parsing, validation, cache lookup, JSON) with a bare net/http handler
// that answers a fixed JSON body of the same size. Run both in one go:
//
//	go test -run '^$' -bench ServeCachedToken ./daemon
func BenchmarkServeCachedToken(b *testing.B) {
	benchCachedToken(b, newFixture(b, options{}), testClient, testSecret)
}

// BenchmarkServeCachedTokenClients is BenchmarkServeCachedToken with the
// daemon of an organisation: three clients, each with a scope policy, the
// caller one of them by its secret, and the audit log on, to a file.
func BenchmarkServeCachedTokenClients(b *testing.B) {
	audit, err := daemon.OpenAuditLog(filepath.Join(b.TempDir(), "audit.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { audit.Close() })
	f := newFixture(b, options{modify: func(c *daemon.Config) {
		c.ClientSecret = ""
		c.Audit = audit
		c.Clients = []daemon.Client{
			{Name: "ledger", ClientID: testClient, Scopes: []string{"test:read"}, Users: []string{"0"}, Secret: "ledger-s3cret-8c2f"},
			{Name: "payroll", ClientID: testClient, Scopes: []string{"test:*"}, Groups: []string{"0"}, Secret: "payroll-s3cret-8c2f"},
			{Name: "ops", ClientID: testClient, Scopes: []string{"altinn:*"}, Users: []string{"65534"}, Secret: "ops-s3cret-8c2f01ab"},
		}
	}})
	benchCachedToken(b, f, "payroll", "payroll-s3cret-8c2f")
}

// benchCachedToken runs the daemon, bare and interleaved cases against f,
// as user with secret on TCP.
func benchCachedToken(b *testing.B, f *fixture, user, secret string) {
	body := scopeForm("test:read test:write").Encode()
	warm := postTo(b, f.client, f.tcp+"/token", scopeForm("test:read test:write"), func(r *http.Request) { r.SetBasicAuth(user, secret) })
	wantToken(b, warm)
	fixed := []byte(`{"access_token":"` + warm.AccessToken + `","token_type":"Bearer","expires_in":119,"scope":"test:read test:write"}` + "\n")
	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.Write(fixed)
	}))
	b.Cleanup(bare.Close)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(client.CloseIdleConnections)
	do := func(b *testing.B, url string, auth bool) {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if auth {
			req.SetBasicAuth(user, secret)
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	run := func(b *testing.B, url string, auth bool) {
		b.ReportAllocs()
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				do(b, url, auth)
			}
		})
	}
	b.Run("daemon", func(b *testing.B) { run(b, f.tcp+"/token", true) })
	b.Run("bare", func(b *testing.B) { run(b, bare.URL+"/token", false) })
	// Both in turn under the same load, so that a noisy machine affects
	// both alike: ratio is the daemon's throughput over the bare handler's.
	b.Run("interleaved", func(b *testing.B) {
		var daemonNS, bareNS atomic.Int64
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				t0 := time.Now()
				do(b, f.tcp+"/token", true)
				t1 := time.Now()
				do(b, bare.URL+"/token", false)
				daemonNS.Add(int64(t1.Sub(t0)))
				bareNS.Add(int64(time.Since(t1)))
			}
		})
		n := float64(b.N)
		b.ReportMetric(float64(daemonNS.Load())/n/1e3, "daemon-us/req")
		b.ReportMetric(float64(bareNS.Load())/n/1e3, "bare-us/req")
		b.ReportMetric(float64(bareNS.Load())/float64(daemonNS.Load()), "ratio")
	})
}
