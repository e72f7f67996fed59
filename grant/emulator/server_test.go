package emulator_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
)

func getJSON(t *testing.T, url string, v any) *http.Response {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp
}

func TestURLs(t *testing.T) {
	e := newEnv(t)
	u := e.srv.URL
	if !strings.HasPrefix(u, "http://127.0.0.1:") || strings.HasSuffix(u, "/") {
		t.Errorf("URL = %q", u)
	}
	for got, want := range map[string]string{
		e.srv.Issuer():            u + "/",
		e.srv.MetadataURL():       u + "/.well-known/oauth-authorization-server",
		e.srv.TokenURL():          u + "/token",
		e.srv.JWKSURL():           u + "/jwks",
		e.srv.AltinnExchangeURL(): u + "/authentication/api/v1/exchange/maskinporten",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestMetadata(t *testing.T) {
	e := newEnv(t)
	var md map[string]any
	resp := getJSON(t, e.srv.MetadataURL(), &md)
	if resp.Header.Get("Date") == "" {
		t.Error("no Date header")
	}
	want := map[string]string{
		"issuer":                                e.srv.Issuer(),
		"token_endpoint":                        e.srv.TokenURL(),
		"jwks_uri":                              e.srv.JWKSURL(),
		"token_endpoint_auth_methods_supported": "[private_key_jwt]",
		"grant_types_supported":                 "[urn:ietf:params:oauth:grant-type:jwt-bearer]",
		"token_endpoint_auth_signing_alg_values_supported": "[RS256 RS384 RS512]",
		"authorization_details_types_supported":            "[urn:altinn:systemuser urn:altinn:consent]",
	}
	for k, v := range want {
		if got := fmt.Sprint(md[k]); got != v {
			t.Errorf("%s = %s, want %s", k, got, v)
		}
	}
}

// TestJWKS checks that the published key is the one that signs tokens, and
// that its kid is the RFC 7638 thumbprint, computed here independently.
func TestJWKS(t *testing.T) {
	e := newEnv(t)
	var set struct {
		Keys []struct{ Kty, Kid, Use, Alg, N, E string }
	}
	getJSON(t, e.srv.JWKSURL(), &set)
	if len(set.Keys) != 1 {
		t.Fatalf("keys = %+v", set.Keys)
	}
	k := set.Keys[0]
	pub := e.srv.PublicKey().(*rsa.PublicKey)
	b64 := base64.RawURLEncoding
	if k.Kty != "RSA" || k.Use != "sig" || k.Alg != "RS256" ||
		k.N != b64.EncodeToString(pub.N.Bytes()) || k.E != b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes()) {
		t.Errorf("key = %+v", k)
	}
	canon, _ := json.Marshal(struct {
		E   string `json:"e"`
		Kty string `json:"kty"`
		N   string `json:"n"`
	}{k.E, "RSA", k.N})
	sum := sha256.Sum256(canon)
	if want := b64.EncodeToString(sum[:]); k.Kid != want {
		t.Errorf("kid = %q, want thumbprint %q", k.Kid, want)
	}
	a, _ := e.mustIssue(e.x5cGrant().sign(t))
	tok, _, err := jwt.NewParser().ParseUnverified(a.AccessToken, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Header["kid"] != k.Kid || tok.Header["alg"] != "RS256" {
		t.Errorf("token header = %v", tok.Header)
	}
}

func TestFailNext(t *testing.T) {
	e := newEnv(t)
	e.srv.FailNext(2, http.StatusServiceUnavailable)
	for i := range 2 {
		a := e.post(e.x5cGrant().sign(t))
		if a.status != http.StatusServiceUnavailable || a.Error != "temporarily_unavailable" || a.header.Get("Retry-After") == "" {
			t.Fatalf("request %d: %d %s, Retry-After %q", i, a.status, a.Error, a.header.Get("Retry-After"))
		}
		if !traceRE.MatchString(a.Description) {
			t.Errorf("description %q", a.Description)
		}
	}
	e.mustIssue(e.x5cGrant().sign(t))

	e.srv.FailNext(1, http.StatusInternalServerError)
	if a := e.post(e.x5cGrant().sign(t)); a.status != 500 || a.Error != "server_error" {
		t.Fatalf("got %d %s", a.status, a.Error)
	}
	st := e.srv.Stats()
	if st.TokenRequests != 4 || st.Injected != 3 || st.Issued != 1 || len(st.Rejected) != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestDropNext(t *testing.T) {
	e := newEnv(t)
	e.srv.DropNext(1)
	resp, err := http.PostForm(e.srv.TokenURL(), form(e.x5cGrant().sign(t)))
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a dropped answer gave %v, want an unexpected EOF", err)
	}
	e.mustIssue(e.x5cGrant().sign(t))
	if st := e.srv.Stats(); st.Injected != 1 || st.Issued != 1 || st.TokenRequests != 2 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestLatency(t *testing.T) {
	e := newEnv(t)
	e.srv.SetLatency(150 * time.Millisecond)
	start := time.Now()
	e.mustIssue(e.x5cGrant().sign(t))
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("answered after %v", d)
	}
	e.srv.SetLatency(0)
	start = time.Now()
	e.mustIssue(e.x5cGrant().sign(t))
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Logf("answered after %v without latency (slow machine?)", d)
	}
}

func TestCloseCutsLatencyShort(t *testing.T) {
	srv := emulator.NewServer(emulator.Config{Key: key(kServer)})
	srv.SetLatency(time.Hour)
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(srv.MetadataURL())
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	srv.Close()
	srv.Close() // idempotent
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := <-done; err == nil {
		t.Error("the delayed request got an answer")
	}
}

func TestDateOffset(t *testing.T) {
	e := newEnv(t)
	check := func(want time.Time) {
		t.Helper()
		a := e.post(e.x5cGrant().sign(t))
		got, err := http.ParseTime(a.header.Get("Date"))
		if err != nil || !got.Equal(want) {
			t.Errorf("Date = %q (%v), want %v", a.header.Get("Date"), err, want)
		}
	}
	check(t0)
	e.srv.SetDateOffset(-90 * time.Second)
	check(t0.Add(-90 * time.Second))
	e.clock.Advance(time.Hour) // the grants follow the clock, so they stay valid
	e.srv.SetDateOffset(time.Minute)
	check(t0.Add(time.Hour + time.Minute))
}

func TestAltinnExchange(t *testing.T) {
	e := newEnv(t)
	s := e.x5cGrant()
	s.claims["scope"] = "test:read test:write"
	a, mp := e.mustIssue(s.sign(t))

	exchange := func(authz string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.srv.AltinnExchangeURL()+"?test=true", nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}

	resp, body := exchange("Bearer " + a.AccessToken)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("got %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	altinn := e.verify(body)
	if altinn["exp"] != mp["exp"] || altinn["urn:altinn:orgNumber"] != orgA || altinn["client_id"] != "client-a" ||
		altinn["scope"] != "test:read test:write" || altinn["urn:altinn:authenticatemethod"] != "maskinporten" {
		t.Errorf("Altinn token claims = %v", altinn)
	}

	other := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": e.srv.Issuer(), "client_id": "client-a", "exp": t0.Add(time.Minute).Unix(),
	})
	forged, _ := other.SignedString(key(kOther))
	for name, authz := range map[string]string{
		"no header":         "",
		"not Bearer":        "Basic " + a.AccessToken,
		"garbage":           "Bearer garbage",
		"forged":            "Bearer " + forged,
		"the Altinn token":  "Bearer " + body,
		"a grant, no token": "Bearer " + e.x5cGrant().sign(t),
	} {
		if resp, _ := exchange(authz); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: got %s", name, resp.Status)
		}
	}
	e.clock.Advance(121 * time.Second)
	if resp, _ := exchange("Bearer " + a.AccessToken); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired token: got %s", resp.Status)
	}
	if st := e.srv.Stats(); st.AltinnExchanges != 1 || st.AltinnRejected != 7 {
		t.Errorf("Stats = %+v", st)
	}
}

// TestConcurrent hits the server from many goroutines at once; with -race
// it checks the server's locking.
func TestConcurrent(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 100
	}
	e := newEnv(t, func(c *emulator.Config) { c.Logf = func(string, ...any) {} })
	grants := make([]string, n)
	for i := range grants {
		grants[i] = e.x5cGrant().sign(t)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			resp, err := client.PostForm(e.srv.TokenURL(), form(grants[i]))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				body, _ := io.ReadAll(resp.Body)
				errs <- fmt.Errorf("%s: %s", resp.Status, body)
			}
			_ = e.srv.Stats()
		})
	}
	// Replays race with the originals: exactly one of each pair may win.
	var replays sync.WaitGroup
	won := make(chan int, 20)
	for i := range 20 {
		replays.Go(func() {
			resp, err := client.PostForm(e.srv.TokenURL(), form(grants[i]))
			if err == nil {
				if resp.StatusCode == http.StatusOK {
					won <- i
				}
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	replays.Wait()
	close(errs)
	close(won)
	lost := 0
	for err := range errs {
		lost++
		if !strings.Contains(err.Error(), "MP-012") {
			t.Error(err)
		}
	}
	if len(won) != lost {
		t.Errorf("%d replays won but %d originals lost", len(won), lost)
	}
	if st := e.srv.Stats(); st.Issued != n || st.JTIs != n || st.TokenRequests != n+20 || st.Rejected["MP-012"] != 20 {
		t.Errorf("Stats = %+v", st)
	}
}

// TestLogsNoSecrets checks that neither grants nor tokens reach Logf.
func TestLogsNoSecrets(t *testing.T) {
	var mu sync.Mutex
	var logs []string
	e := newEnv(t, func(c *emulator.Config) {
		c.Logf = func(format string, args ...any) {
			mu.Lock()
			logs = append(logs, fmt.Sprintf(format, args...))
			mu.Unlock()
		}
	})
	g := e.x5cGrant().sign(t)
	a, _ := e.mustIssue(g)
	e.post(g)
	bad := e.x5cGrant()
	bad.claims["aud"] = "https://maskinporten.no/"
	badGrant := bad.sign(t)
	e.post(badGrant)
	req, _ := http.NewRequest(http.MethodGet, e.srv.AltinnExchangeURL(), nil)
	req.Header.Set("Authorization", "Bearer "+a.AccessToken)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logs) < 4 {
		t.Errorf("only %d log lines", len(logs))
	}
	for _, l := range logs {
		for _, secret := range []string{g, badGrant, a.AccessToken, strings.Split(g, ".")[2], strings.Split(a.AccessToken, ".")[2]} {
			if strings.Contains(l, secret) {
				t.Errorf("log line holds a grant or token: %q", l)
			}
		}
		if strings.Contains(l, "eyJ") {
			t.Errorf("log line looks like it holds a JWT: %q", l)
		}
	}
}

func TestStartOn(t *testing.T) {
	srv := emulator.NewUnstartedServer(emulator.Config{Key: key(kServer)})
	if srv.Issuer() != "" {
		t.Errorf("Issuer before start = %q", srv.Issuer())
	}
	if err := srv.StartOn("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.StartOn("127.0.0.1:0"); err == nil {
		t.Error("a second start succeeded")
	}
	var md map[string]any
	getJSON(t, srv.MetadataURL(), &md)
	if md["issuer"] != srv.URL+"/" {
		t.Errorf("issuer = %v", md["issuer"])
	}
}

func TestBadConfigPanics(t *testing.T) {
	for name, cfg := range map[string]emulator.Config{
		"client without ID":  {Key: key(kServer), Clients: []emulator.Client{{OrgNumber: orgA}}},
		"org of 8 digits":    {Key: key(kServer), Clients: []emulator.Client{{ID: "x", OrgNumber: "91000000"}}},
		"org with NTRNO":     {Key: key(kServer), Clients: []emulator.Client{{ID: "x", OrgNumber: "NTRNO-" + orgA}}},
		"not an RSA key Key": {Key: ed25519Key(t)},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			emulator.NewUnstartedServer(cfg)
		})
	}
}

func ed25519Key(t *testing.T) crypto.Signer {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
