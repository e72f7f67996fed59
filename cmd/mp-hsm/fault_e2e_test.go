//go:build cgo

package main

// Fault injection against the built binary: a slow Maskinporten, answers
// cut off mid-way, and 503s, all from the emulator on loopback. Every run
// is bounded by runCLI's minute and by the command's own --timeout.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
)

// TestFaultSlowMaskinporten: the emulator answers after 5 s; with
// --timeout 2s the command gives up at 2 s (no retry fits in what is
// left), exits 5 and says the deadline passed. Both the token endpoint
// alone (--issuer, --token-endpoint) and the metadata document
// (--well-known) are slow.
func TestFaultSlowMaskinporten(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	binary(t)
	for _, tc := range []struct {
		name string
		args func(*testing.T) []string
		want []string
	}{
		{"token endpoint", func(t *testing.T) []string {
			emu := fx.emulator(t)
			emu.SetLatency(5 * time.Second)
			return []string{"token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead,
				"--issuer", emu.Issuer(), "--token-endpoint", emu.TokenURL(), "--timeout", "2s"}
		}, []string{"/token unavailable", "context deadline exceeded", "gave up after --timeout 2s"}},
		{"metadata", func(t *testing.T) []string {
			emu := fx.emulator(t)
			emu.SetLatency(5 * time.Second)
			return e2eTokenArgs(emu, "--timeout", "2s")
		}, []string{"--well-known", "unavailable", "context deadline exceeded", "gave up after --timeout 2s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args, env := tc.args(t), fx.env(t, fx.card)
			start := time.Now()
			res := runCLI(t, env, args...)
			took := time.Since(start)
			e2eWantFail(t, res, exitUnavailable, tc.want...)
			if took < 2*time.Second || took > 3500*time.Millisecond {
				t.Errorf("the command took %s, want about its --timeout of 2s", took)
			}
		})
	}
}

// TestFaultDroppedAnswers: the emulator cuts the first answers off after
// the headers (Content-Length promised, connection closed); each attempt
// is retried with a new grant, and the third succeeds.
func TestFaultDroppedAnswers(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	for _, dropped := range []int{1, 2} {
		emu := fx.emulator(t)
		proxy := newLeakProxy(t, emu) // records the grants
		emu.DropNext(dropped)
		res := runCLI(t, fx.env(t, fx.card), proxy.args("token")...)
		e2eWantOK(t, res)
		e2eAccessToken(t, emu, res.stdout)
		st := emu.Stats()
		if st.TokenRequests != dropped+1 || st.Injected != dropped || st.Issued != 1 {
			t.Errorf("%d dropped: stats %+v, want %d requests, %d dropped, 1 token", dropped, st, dropped+1, dropped)
		}
		faultDistinctJTIs(t, proxy, dropped+1)
	}
}

// TestFaultTwo503s: the first two answers are 503 (with Retry-After); the
// third attempt gets a token, and the three grants have three jti.
func TestFaultTwo503s(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	emu := fx.emulator(t)
	proxy := newLeakProxy(t, emu)
	emu.FailNext(2, http.StatusServiceUnavailable)
	res := runCLI(t, fx.env(t, fx.card), proxy.args("token")...)
	e2eWantOK(t, res)
	e2eAccessToken(t, emu, res.stdout)
	if st := emu.Stats(); st.TokenRequests != 3 || st.Injected != 2 || st.Issued != 1 {
		t.Errorf("stats %+v: want 3 requests, 2 of them 503, 1 token", st)
	}
	faultDistinctJTIs(t, proxy, 3)
}

// faultDistinctJTIs checks that the proxy saw n grants with n different
// jti claims.
func faultDistinctJTIs(t *testing.T, p *leakProxy, n int) {
	t.Helper()
	p.mu.Lock()
	grants := append([]string(nil), p.grants...)
	p.mu.Unlock()
	jtis := map[string]bool{}
	for _, g := range grants {
		parts := strings.Split(g, ".")
		if len(parts) != 3 {
			t.Fatalf("a grant of %d parts", len(parts))
		}
		raw, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			JTI string `json:"jti"`
		}
		if err := json.Unmarshal(raw, &c); err != nil || c.JTI == "" {
			t.Fatalf("grant claims without jti: %v", err)
		}
		jtis[c.JTI] = true
	}
	if len(grants) != n || len(jtis) != n {
		t.Errorf("%d grants with %d distinct jti, want %d and %d", len(grants), len(jtis), n, n)
	}
}

// daemonProc is `mp-hsm serve` run by a test on a free loopback TCP port,
// with a client secret; stderr is kept.
type daemonProc struct {
	cmd    *exec.Cmd
	base   string // http://127.0.0.1:port
	home   string // its HOME and TMPDIR, holding the secret file alone
	client string
	secret string
	stderr *lockedLog
	exited chan error
	http   *http.Client
}

// startDaemon starts `mp-hsm [global...] serve args...` in env (as runCLI
// gives it), waits until /readyz answers 200, and stops the daemon when the
// test ends. global are the flags before the command, such as --log-level.
func startDaemon(t *testing.T, env []string, secret string, global []string, args ...string) *daemonProc {
	t.Helper()
	d := daemonStart(t, env, secret, global, args...)
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-d.exited:
			d.exited <- err
			t.Fatalf("mp-hsm serve exited: %v\n%s", err, d.stderr)
		default:
		}
		resp, err := d.http.Get(d.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("mp-hsm serve not ready after 20s: %v\n%s", err, d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// daemonDeadline is how long a test's daemon may run before it is killed
// and the test fails naming it: over the longest test (a minute of load).
const daemonDeadline = 4 * time.Minute

// daemonStart starts the daemon without waiting for it.
func daemonStart(t *testing.T, env []string, secret string, global []string, args ...string) *daemonProc {
	t.Helper()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	argv := append(slices.Clone(global), "serve", "--listen", "tcp:"+addr, "--client-secret-file", secretFile)
	cmd := testexec.Command(t, daemonDeadline, binary(t), append(argv, args...)...)
	cmd.Env = testexec.Env(dir, env...)
	d := &daemonProc{cmd: cmd.Cmd, base: "http://" + addr, home: dir, client: e2eClient, secret: secret, stderr: &lockedLog{}, exited: make(chan error, 1),
		http: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	cmd.Stderr = d.stderr
	p := testexec.Start(t, cmd)
	go func() { d.exited <- p.Err() }()
	t.Cleanup(func() {
		d.stop()
		d.http.CloseIdleConnections()
	})
	return d
}

// post sends a token request with HTTP Basic (the test's client and
// secret unless user is set) and returns the status and body.
func (d *daemonProc) post(form url.Values, user, pass string) (int, []byte, error) {
	if user == "" {
		user, pass = d.client, d.secret
	}
	req, err := http.NewRequest(http.MethodPost, d.base+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(user, pass)
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// get fetches path and returns the status and body.
func (d *daemonProc) get(path string) (int, []byte, error) {
	resp, err := d.http.Get(d.base + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// stop sends SIGTERM and waits up to 15 s (then kills); it returns how the
// process ended. It may be called more than once.
func (d *daemonProc) stop() error {
	if d.cmd.Process == nil {
		return nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		d.exited <- err
		return err
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		err := <-d.exited
		d.exited <- err
		return fmt.Errorf("no exit within 15s of SIGTERM (killed): %v", err)
	}
}

// TestFaultServe503Load: `mp-hsm serve` under a steady, paced load of
// cached-token requests for 12 keys while Maskinporten answers 503 to 30%
// of token requests, for a minute (-short: 12 seconds). Tokens live 6 s,
// so every key is refreshed in the background about ten times under the
// faults. At least 99.9%
// of the client requests must succeed, and no token may be served expired.
func TestFaultServe503Load(t *testing.T) {
	t.Parallel()
	const (
		keys    = 12
		workers = 4
		pace    = 10 * time.Millisecond // per worker between requests
	)
	duration := time.Minute
	if testing.Short() {
		duration = 12 * time.Second
	}
	fx := e2e(t)
	cfg := fx.emulatorConfig(t)
	cfg.Logf = func(string, ...any) {}
	cfg.TokenLifetime = 6 * time.Second
	for i := range keys {
		cfg.Clients[0].Scopes = append(cfg.Clients[0].Scopes, fmt.Sprintf("fault:%d", i))
	}
	emu := emulator.NewTest(t, cfg)
	var faulty atomic.Bool
	var injected, passed atomic.Int64
	target, _ := url.Parse(emu.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" && faulty.Load() && rand.Float64() < 0.3 {
			injected.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":"server_error","error_description":"Service unavailable (injected)"}`)
			return
		}
		if r.URL.Path == "/token" {
			passed.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	d := startDaemon(t, fx.env(t, fx.card), "fault-secret-5a0e77", []string{"--log-level", "warn"},
		"--token-label", "e2e-card", "--client-id", e2eClient, "--issuer", emu.Issuer(), "--token-endpoint", front.URL+"/token")
	form := func(i int) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "scope": {fmt.Sprintf("fault:%d", i)}}
	}
	for i := range keys { // fill the cache before the faults begin
		if status, body, err := d.post(form(i), "", ""); err != nil || status != http.StatusOK {
			t.Fatalf("warming key %d: %d %s %v\n%s", i, status, body, err, d.stderr)
		}
	}

	faulty.Store(true)
	var total, failed, expired atomic.Int64
	var firstErr sync.Once
	stop := time.Now().Add(duration)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; time.Now().Before(stop); i++ {
				status, body, err := d.post(form(i%keys), "", "")
				now := time.Now()
				total.Add(1)
				if err != nil || status != http.StatusOK {
					failed.Add(1)
					firstErr.Do(func() { t.Logf("first failure: %d %s %v", status, body, err) })
				} else if exp, ok := faultTokenExpiry(body); !ok || !exp.After(now) {
					expired.Add(1)
					t.Errorf("a token served at %s expires at %s (%s)", now.Format(time.StampMilli), exp.Format(time.StampMilli), body)
				}
				time.Sleep(pace)
			}
		})
	}
	wg.Wait()
	faulty.Store(false)

	n, f := total.Load(), failed.Load()
	t.Logf("%d requests in %s, %d failed, %d served expired; Maskinporten: %d token requests passed, %d answered 503",
		n, duration, f, expired.Load(), passed.Load(), injected.Load())
	if n < 1000 {
		t.Errorf("only %d requests: the load did not run", n)
	}
	if float64(f) > 0.001*float64(n) {
		t.Errorf("%d of %d requests failed (%.3f%%), want at most 0.1%%", f, n, 100*float64(f)/float64(n))
	}
	if injected.Load() == 0 {
		t.Error("no 503 was injected: no refresh happened under the faults")
	}
	if err := d.stop(); err != nil {
		t.Errorf("serve after SIGTERM: %v\n%s", err, d.stderr)
	}
}

// faultTokenExpiry reads the exp claim of the access token in a token
// response, without verifying it.
func faultTokenExpiry(body []byte) (time.Time, bool) {
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if json.Unmarshal(body, &tr) != nil || tr.ExpiresIn <= 0 {
		return time.Time{}, false
	}
	parts := strings.Split(tr.AccessToken, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(raw, &c) != nil || c.Exp == 0 {
		return time.Time{}, false
	}
	return time.Unix(c.Exp, 0), true
}
