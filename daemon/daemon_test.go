package daemon_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/daemon/socket"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

func TestTokenOverUnixSocket(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	fi, err := os.Stat(f.sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	a := f.post(scopeForm("test:read test:write"))
	wantToken(t, a)
	if a.Scope != "test:read test:write" || a.ExpiresIn > 120 {
		t.Fatalf("answer %+v: want scope %q and expires_in <= 120", a, "test:read test:write")
	}
	if got := f.claims(a.AccessToken)["scope"]; got != "test:read test:write" {
		t.Fatalf("token scope claim %v", got)
	}
	if a.Header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(a.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("headers %v: want Cache-Control no-store and JSON", a.Header)
	}
	// The same scope set in another order and with a duplicate is the same key.
	b := f.post(scopeForm("test:write  test:read test:write"))
	if b.AccessToken != a.AccessToken {
		t.Fatal("the same scope set got another token: not cached")
	}
	if n := f.emu.Stats().Issued; n != 1 {
		t.Fatalf("emulator issued %d tokens, want 1", n)
	}
	// Another request is another key.
	c := f.post(scopeForm("test:read", "consumer_org", consumer))
	wantToken(t, c)
	if f.claims(c.AccessToken)["consumer"] == nil || c.AccessToken == a.AccessToken {
		t.Fatal("the consumer_org token is not a consumer token")
	}
	if f.metric(`mphsm_cache_hits_total`) != 1 || f.metric(`mphsm_cache_misses_total`) != 2 {
		t.Fatalf("cache hits %v, misses %v; want 1 and 2", f.metric(`mphsm_cache_hits_total`), f.metric(`mphsm_cache_misses_total`))
	}
	if logs := f.logs.String(); strings.Contains(logs, a.AccessToken) || strings.Contains(logs, c.AccessToken) {
		t.Fatal("the log holds an access token")
	}
}

func TestTCPNeedsBasicAuth(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	u := f.tcp + "/token"
	a := postTo(t, f.client, u, scopeForm("test:read"), func(r *http.Request) { r.SetBasicAuth(testClient, testSecret) })
	wantToken(t, a)

	for name, prepare := range map[string]func(*http.Request){
		"no credentials": nil,
		"wrong secret":   func(r *http.Request) { r.SetBasicAuth(testClient, testSecret+"x") },
		"wrong client":   func(r *http.Request) { r.SetBasicAuth("someone", testSecret) },
		"empty secret":   func(r *http.Request) { r.SetBasicAuth(testClient, "") },
	} {
		a := postTo(t, f.client, u, scopeForm("test:read"), prepare)
		wantError(t, a, http.StatusUnauthorized, "invalid_client")
		if a.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate header", name)
		}
	}
	// Credentials in the form (RFC 6749 section 2.3.1) work too.
	a = postTo(t, f.client, u, scopeForm("test:read", "client_id", testClient, "client_secret", testSecret), nil)
	wantToken(t, a)
	if f.metric(`mphsm_token_requests_total{result="invalid_client"}`) != 4 {
		t.Fatalf("invalid_client count %v, want 4", f.metric(`mphsm_token_requests_total{result="invalid_client"}`))
	}
	// Health and metrics need no credentials.
	resp, err := f.client.Get(f.tcp + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz over TCP: %d", resp.StatusCode)
	}
}

func TestListenersRefused(t *testing.T) {
	t.Parallel()
	if ln, err := socket.Listen("tcp:0.0.0.0:0", socket.Options{}); !errors.Is(err, socket.ErrConfig) {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("Listen on 0.0.0.0 without AllowRemote = %v, want ErrConfig", err)
	}
	if ln, err := socket.Listen("tcp::0", socket.Options{}); err == nil {
		ln.Close()
		t.Fatal("Listen on all interfaces without AllowRemote succeeded")
	}
	for _, bad := range []string{"", "tcp", "udp:127.0.0.1:1", "unix:", "127.0.0.1:80"} {
		if ln, err := socket.Listen(bad, socket.Options{}); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) succeeded", bad)
		}
	}
	// A TCP listener without a client secret is refused by Serve.
	f := newFixture(t, options{noTCP: true, modify: func(c *daemon.Config) { c.ClientSecret = "" }})
	ln, err := socket.Listen("tcp:127.0.0.1:0", socket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Serve(ln); !errors.Is(err, daemon.ErrConfig) {
		t.Fatalf("Serve(TCP) without a secret = %v, want ErrConfig", err)
	}
	// A second daemon on a live socket is refused; a stale socket is
	// replaced; a file that is not a socket is left alone.
	if ln, err := socket.Listen("unix:"+f.sock, socket.Options{}); err == nil {
		ln.Close()
		t.Fatal("Listen on a socket another server listens on succeeded")
	}
	file := filepath.Join(filepath.Dir(f.sock), "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if ln, err := socket.Listen("unix:"+file, socket.Options{}); err == nil {
		ln.Close()
		t.Fatal("Listen over a regular file succeeded")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatal("Listen removed a regular file")
	}
	stale := filepath.Join(filepath.Dir(f.sock), "stale.sock")
	ln1, err := socket.Listen("unix:"+stale, socket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	os.Link(stale, stale+".keep") // keeps the inode when ln1 removes its socket
	ln1.Close()
	os.Rename(stale+".keep", stale) // a socket file nobody listens on
	ln2, err := socket.Listen("unix:"+stale, socket.Options{SocketGroup: strconv.Itoa(os.Getgid())})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	fi, _ := os.Stat(stale)
	if fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket with a group has mode %v, want 0660", fi.Mode().Perm())
	}
	ln2.Close()
	if _, err := os.Lstat(stale); !os.IsNotExist(err) {
		t.Fatal("the socket was not removed on Close")
	}
}

func TestAllowedScopes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{modify: func(c *daemon.Config) { c.AllowedScopes = []string{"test:read, altinn:*"} }})
	wantToken(t, f.post(scopeForm("test:read")))
	wantToken(t, f.post(scopeForm("altinn:serviceowner")))
	before := f.emu.Stats().TokenRequests
	a := f.post(scopeForm("test:read test:write"))
	wantError(t, a, http.StatusBadRequest, "invalid_scope")
	if !strings.Contains(a.Description, "test:write") {
		t.Fatalf("description %q does not name the scope", a.Description)
	}
	if f.emu.Stats().TokenRequests != before {
		t.Fatal("a refused scope reached Maskinporten")
	}
	// Reload changes the policy and keeps the cache (same key).
	cfg := f.cfg
	cfg.AllowedScopes = nil
	if err := f.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	wantToken(t, f.post(scopeForm("test:read test:write")))
	wantToken(t, f.post(scopeForm("test:read")))
	if n := f.emu.Stats().TokenRequests; n != before+1 {
		t.Fatalf("%d token requests after reload, want %d: the cache was not kept", n, before+1)
	}
}

func TestClientCredentialsLibrary(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	cc := clientcredentials.Config{
		ClientID:     testClient,
		ClientSecret: testSecret,
		TokenURL:     f.tcp + "/token",
		Scopes:       []string{"test:read", "test:write"},
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, f.client)
	tok, err := cc.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Valid() || tok.TokenType != "Bearer" || time.Until(tok.Expiry) < time.Minute {
		t.Fatalf("token %+v: want a valid bearer token for about two minutes", tok)
	}
	f.claims(tok.AccessToken)
	// Over the unix socket, with the same library, no secret needed.
	cc.TokenURL, cc.ClientSecret = "http://mp-hsm/token", ""
	ctx = context.WithValue(context.Background(), oauth2.HTTPClient, f.unix)
	tok2, err := cc.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tok2.AccessToken != tok.AccessToken {
		t.Fatal("the unix socket got another token for the same scopes")
	}
	// A wrong secret gives the library's *oauth2.RetrieveError.
	cc.TokenURL, cc.ClientSecret = f.tcp+"/token", "wrong"
	_, err = cc.Token(context.WithValue(context.Background(), oauth2.HTTPClient, f.client))
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Fatalf("wrong secret: %v, want a RetrieveError invalid_client", err)
	}
}

func TestColdKeyOneExchange(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{modify: func(c *daemon.Config) { c.RequestTimeout = 20 * time.Second; c.ReadTimeout = 20 * time.Second }})
	f.emu.SetLatency(300 * time.Millisecond) // so that every caller arrives while the exchange runs
	const n = 500
	var wg sync.WaitGroup
	tokens := make([]string, n)
	errs := make(chan string, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest(http.MethodPost, "http://mp-hsm/token", strings.NewReader(scopeForm("test:other").Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := f.unix.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			var a tokenAnswer
			if err := jsonDecode(resp, &a); err != nil || resp.StatusCode != 200 {
				errs <- describe(a)
				return
			}
			tokens[i] = a.AccessToken
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatalf("a caller failed: %s", e)
	}
	for i := range tokens {
		if tokens[i] != tokens[0] {
			t.Fatalf("caller %d got another token", i)
		}
	}
	if st := f.emu.Stats(); st.TokenRequests != 1 || st.Issued != 1 {
		t.Fatalf("emulator saw %d token requests (%d issued), want 1", st.TokenRequests, st.Issued)
	}
}

func TestBackgroundRefreshKeepsHotKeyFresh(t *testing.T) {
	t.Parallel()
	const lifetime = 3 * time.Second
	f := newFixture(t, options{lifetime: lifetime})
	form := scopeForm("test:read")
	seen := map[string]bool{}
	prev := tokenAnswer{}
	end := time.Now().Add(3*lifetime + 500*time.Millisecond)
	n := 0
	for time.Now().Before(end) {
		a := f.post(form)
		wantToken(t, a)
		got := time.Now()
		exp, err := f.claims(a.AccessToken).GetExpirationTime() // also fails on an expired token
		if err != nil || !exp.After(got) {
			t.Fatalf("request %d: served a token that expired at %v", n, exp)
		}
		if a.ExpiresIn > int(lifetime/time.Second) || time.Duration(a.ExpiresIn)*time.Second > time.Until(exp.Time)+time.Second {
			t.Fatalf("request %d: expires_in %d, but the token expires in %s", n, a.ExpiresIn, time.Until(exp.Time))
		}
		if prev.AccessToken == a.AccessToken && a.ExpiresIn > prev.ExpiresIn {
			t.Fatalf("request %d: expires_in went up from %d to %d for the same token", n, prev.ExpiresIn, a.ExpiresIn)
		}
		seen[a.AccessToken] = true
		prev = a
		n++
		time.Sleep(25 * time.Millisecond)
	}
	if len(seen) < 3 {
		t.Fatalf("%d distinct tokens in three lifetimes: not refreshed", len(seen))
	}
	// Only the first request waited; every later one was a cache hit.
	if m := f.metric(`mphsm_cache_misses_total`); m != 1 {
		t.Fatalf("%v cache misses, want 1: the hot key was not refreshed in the background", m)
	}
	if r := f.metric(`mphsm_background_refreshes_total{result="ok"}`); r < 2 {
		t.Fatalf("%v background refreshes, want at least 2", r)
	}
	t.Logf("%d requests, %d tokens, %d exchanges", n, len(seen), f.emu.Stats().Issued)
}

func TestTokenRemovalAndReconnect(t *testing.T) {
	t.Parallel()
	r := &removable{inner: sharedOpener(t)}
	f := newFixture(t, options{modify: func(c *daemon.Config) {
		c.OpenSigner = r.open
		c.ProbeInterval = 50 * time.Millisecond
		c.ReconnectMin = 50 * time.Millisecond
		c.ReconnectMax = 200 * time.Millisecond
	}})
	cached := f.post(scopeForm("test:read"))
	wantToken(t, cached)
	if code, _ := f.get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz %d before removal", code)
	}

	r.set(true) // pull the card out
	waitFor(t, 5*time.Second, "/readyz to turn red", func() bool { code, _ := f.get("/readyz"); return code == http.StatusServiceUnavailable })
	_, body := f.get("/readyz")
	if !strings.Contains(body, "token removed") {
		t.Fatalf("/readyz says %q, want the reason", body)
	}
	if a := f.post(scopeForm("test:read")); a.AccessToken != cached.AccessToken {
		t.Fatalf("a cached token was not served while the card is away: %s", describe(a))
	}
	a := f.post(scopeForm("test:write"))
	wantError(t, a, http.StatusServiceUnavailable, "temporarily_unavailable")
	if !strings.Contains(a.Description, "token removed") || a.Header.Get("Retry-After") == "" {
		t.Fatalf("503 %q (Retry-After %q): want the reason and Retry-After", a.Description, a.Header.Get("Retry-After"))
	}
	opens := r.opens.Load()
	waitFor(t, 5*time.Second, "reconnect attempts", func() bool { return r.opens.Load() >= opens+2 })

	r.set(false) // put it back
	waitFor(t, 5*time.Second, "/readyz to turn green", func() bool { code, _ := f.get("/readyz"); return code == http.StatusOK })
	wantToken(t, f.post(scopeForm("test:write")))
	if f.metric(`mphsm_token_faults_total`) < 1 || f.metric(`mphsm_ready`) != 1 {
		t.Fatal("metrics do not show the fault and the recovery")
	}
	// The same card came back: the cache was kept.
	if a := f.post(scopeForm("test:read")); a.AccessToken != cached.AccessToken {
		t.Fatal("the cache was dropped although the key is the same")
	}
}

// A signature failing with a device error during an exchange also turns
// the daemon not ready, without waiting for the probe.
func TestSignatureFaultDuringExchange(t *testing.T) {
	t.Parallel()
	r := &removable{inner: sharedOpener(t)}
	f := newFixture(t, options{modify: func(c *daemon.Config) {
		c.OpenSigner = r.open
		c.ProbeInterval = -1
		c.PresencePoll = 20 * time.Millisecond // the card stays away: the reconnect fails at once
	}})
	r.set(true)
	a := f.post(scopeForm("test:read"))
	wantError(t, a, http.StatusServiceUnavailable, "temporarily_unavailable")
	if r.opens.Load() < 2 {
		t.Errorf("%d opens: the request was answered before the reconnect was tried", r.opens.Load())
	}
	if ok, reason := f.srv.Ready(); ok || !strings.Contains(reason, "token removed") {
		t.Fatalf("Ready() = %v, %q after a failed signature", ok, reason)
	}
	if f.emu.Stats().TokenRequests != 0 {
		t.Fatal("an unsigned grant reached Maskinporten")
	}
}

func TestShutdownDrains(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	f.emu.SetLatency(400 * time.Millisecond)
	done := make(chan tokenAnswer, 1)
	go func() { done <- f.post(scopeForm("test:read")) }()
	waitFor(t, 5*time.Second, "the exchange to start", func() bool { return f.metric("mphsm_exchanges_in_flight") == 1 })
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	a := <-done
	wantToken(t, a) // the request in flight was answered
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown took %s", d)
	}
	if _, err := os.Lstat(f.sock); !os.IsNotExist(err) {
		t.Fatal("the socket is still there after Shutdown")
	}
	if ok, _ := f.srv.Ready(); ok {
		t.Fatal("ready after Shutdown")
	}
}

func TestMetricsMove(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	code, body := f.get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, name := range []string{"mphsm_token_requests_total", "mphsm_cache_hits_total", "mphsm_cache_misses_total",
		"mphsm_signature_duration_seconds", "mphsm_certificate_expiry_seconds", "mphsm_token_store_keys",
		"mphsm_ready", "mphsm_signer_opens_total", "mphsm_background_refreshes_total"} {
		if !strings.Contains(body, "# TYPE "+name+" ") {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	sigs := f.metric("mphsm_signature_duration_seconds_count")
	wantToken(t, f.post(scopeForm("test:read")))
	wantToken(t, f.post(scopeForm("test:read")))
	wantError(t, f.post(scopeForm("")), http.StatusBadRequest, "invalid_scope")
	for series, want := range map[string]float64{
		`mphsm_token_requests_total{result="ok"}`:                             2,
		`mphsm_token_requests_total{result="invalid_scope"}`:                  1,
		`mphsm_cache_hits_total`:                                              1,
		`mphsm_cache_misses_total`:                                            1,
		`mphsm_maskinporten_requests_total{endpoint="token",status="200"}`:    1,
		`mphsm_token_store_keys`:                                              1,
		`mphsm_ready`:                                                         1,
		`mphsm_signer_opens_total{result="ok"}`:                               1,
		`mphsm_maskinporten_request_duration_seconds_count{endpoint="token"}`: 1,
	} {
		if got := f.metric(series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := f.metric("mphsm_signature_duration_seconds_count"); got != sigs+1 {
		t.Errorf("signatures %v -> %v, want one more", sigs, got)
	}
	if d := f.metric("mphsm_certificate_expiry_seconds"); d < 300*24*3600 {
		t.Errorf("certificate expiry in %v s, want about a year", d)
	}
}

func TestMaskinportenFailures(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	f.emu.FailNext(3, http.StatusServiceUnavailable)
	a := f.post(scopeForm("test:read"))
	wantError(t, a, http.StatusServiceUnavailable, "temporarily_unavailable")
	if ra := a.Header.Get("Retry-After"); ra != "1" { // the emulator's, as Maskinporten's
		t.Fatalf("Retry-After %q, want Maskinporten's 1", ra)
	}
	wantToken(t, f.post(scopeForm("test:read"))) // recovered; not cached as a failure

	// A scope the client does not have: Maskinporten's invalid_scope, and
	// the refusal is remembered briefly.
	a = f.post(scopeForm("test:unknown"))
	wantError(t, a, http.StatusBadRequest, "invalid_scope")
	before := f.emu.Stats().TokenRequests
	wantError(t, f.post(scopeForm("test:unknown")), http.StatusBadRequest, "invalid_scope")
	if f.emu.Stats().TokenRequests != before {
		t.Fatal("a refusal was not remembered: Maskinporten asked again at once")
	}
	// consumer_org that did not delegate: Maskinporten's 403 MP-251 is
	// RFC 6749's invalid_scope (400), its code and text kept.
	a = f.post(scopeForm("test:read", "consumer_org", "910000039"))
	wantError(t, a, http.StatusBadRequest, "invalid_scope")
	if !strings.Contains(a.Description, "HTTP 403 access_denied") || !strings.Contains(a.Description, "MP-251") ||
		!strings.Contains(a.Description, "has not delegated access") {
		t.Fatalf("undelegated consumer_org: %s, want Maskinporten's 403, MP-251 and its text", describe(a))
	}
}

func TestAltinnToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	a := f.post(scopeForm("altinn:serviceowner", "altinn", "true"))
	wantToken(t, a)
	mp := f.post(scopeForm("altinn:serviceowner"))
	wantToken(t, mp)
	if a.AccessToken == mp.AccessToken {
		t.Fatal("altinn=true gave the Maskinporten token")
	}
	st := f.emu.Stats()
	if st.AltinnExchanges != 1 || st.Issued != 1 {
		t.Fatalf("emulator: %d Altinn exchanges, %d Maskinporten tokens; want 1 and 1 (shared)", st.AltinnExchanges, st.Issued)
	}
	if a2 := f.post(scopeForm("altinn:serviceowner", "altinn", "1")); a2.AccessToken != a.AccessToken {
		t.Fatal("the Altinn token was not cached")
	}
}

func TestReloadNewKeyDropsCache(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	a := f.post(scopeForm("test:read"))
	wantToken(t, a)
	// Another key with another certificate of the same organisation.
	second := fileKey(t)
	cfg := f.cfg
	cfg.OpenSigner = func(context.Context) (signer.Signer, error) { return second, nil }
	if err := f.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	b := f.post(scopeForm("test:read"))
	wantToken(t, b)
	if b.AccessToken == a.AccessToken {
		t.Fatal("a token for the old key was served after the key changed")
	}
	// A reload that cannot open its key changes nothing while ready.
	bad := f.cfg
	bad.OpenSigner = func(context.Context) (signer.Signer, error) { return nil, tokenerr.ErrKeyNotFound }
	if err := f.srv.Reload(bad); !errors.Is(err, tokenerr.ErrKeyNotFound) {
		t.Fatalf("Reload with a missing key = %v", err)
	}
	if c := f.post(scopeForm("test:read")); c.AccessToken != b.AccessToken {
		t.Fatal("a failed reload dropped the cache")
	}
}
