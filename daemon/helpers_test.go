package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/miekg/pkcs11"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

func TestMain(m *testing.M) { os.Exit(softhsm.Main(m)) }

const (
	testClient = "daemon-test-client"
	testSecret = "local-s3cret"
	consumer   = "910000012" // softhsm.ValidOrgNumber(1), delegated to the client
	sysUserOrg = "910000020"
)

var testScopes = []string{"test:read", "test:write", "altinn:serviceowner", "test:other"}

// shared is what many tests use and is slow to make: the CA, a SoftHSM2
// token with an RSA key and its certificate, and the emulator's key.
var shared struct {
	once   sync.Once
	ca     *softhsm.CA
	tok    *softhsm.Token
	emuKey crypto.Signer
	err    error
}

func setup(t testing.TB) {
	t.Helper()
	shared.once.Do(func() {
		if shared.ca, shared.err = softhsm.NewCA(softhsm.EnvTest); shared.err != nil {
			return
		}
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			shared.err = err
			return
		}
		shared.emuKey = k
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
}

// testCA returns the shared test CA.
func testCA(t testing.TB) *softhsm.CA {
	setup(t)
	return shared.ca
}

// sharedToken returns a SoftHSM2 token with a certified RSA key, made once.
// Tests that log in with a wrong PIN make their own.
var tokOnce sync.Once

func sharedToken(t testing.TB) *softhsm.Token {
	t.Helper()
	setup(t)
	tokOnce.Do(func() {
		shared.tok, _ = softhsm.NewWithKey(t, shared.ca, softhsm.KeyOptions{Label: "daemon"}, softhsm.LeafOptions{})
	})
	if shared.tok == nil {
		t.Fatal("no shared SoftHSM2 token")
	}
	return shared.tok
}

// signerConfig opens tok's key with its PIN.
func signerConfig(tok *softhsm.Token) signer.Config {
	return signer.Config{
		Module: tok.Module,
		Token:  hsm.TokenSelector{Serial: tok.Serial},
		PIN:    hsm.StaticPIN([]byte(tok.PIN)),
	}
}

// newEmulator starts an emulator that trusts the test CA and knows
// testClient, with tokens living lifetime (0: 120 s).
func newEmulator(t testing.TB, lifetime time.Duration) *emulator.Server {
	t.Helper()
	setup(t)
	return emulator.NewTest(t, emulator.Config{
		Roots: []*x509.Certificate{shared.ca.Root},
		Clients: []emulator.Client{{
			ID:             testClient,
			OrgNumber:      softhsm.DefaultOrgNumber,
			Scopes:         testScopes,
			DelegatedBy:    []string{consumer},
			SystemUserOrgs: []string{sysUserOrg},
		}},
		TokenLifetime: lifetime,
		Key:           shared.emuKey,
		Logf:          func(string, ...any) {}, // the daemon's log tells the story
	})
}

func environment(emu *emulator.Server) grant.Environment {
	return grant.Environment{Issuer: emu.Issuer(), TokenEndpoint: emu.TokenURL(), AltinnExchange: emu.AltinnExchangeURL()}
}

// logBuffer collects the daemon's log; a failed test prints it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// fixture is a running daemon on a unix socket and a TCP port.
type fixture struct {
	t      testing.TB
	emu    *emulator.Server
	srv    *daemon.Server
	cfg    daemon.Config
	reg    *prometheus.Registry
	logs   *logBuffer
	sock   string
	unix   *http.Client // talks to sock
	tcp    string       // http://127.0.0.1:port
	client *http.Client // for tcp
}

// options adjust a fixture's Config before New.
type options struct {
	lifetime time.Duration
	tok      *softhsm.Token
	modify   func(*daemon.Config)
	noTCP    bool
}

func newFixture(t testing.TB, o options) *fixture {
	t.Helper()
	tok := o.tok
	if tok == nil {
		tok = sharedToken(t)
	}
	f := &fixture{t: t, emu: newEmulator(t, o.lifetime), reg: prometheus.NewRegistry(), logs: &logBuffer{}}
	sc := signerConfig(tok)
	f.cfg = daemon.Config{
		OpenSigner:   func(context.Context) (signer.Signer, error) { return signer.Open(sc) },
		Grant:        grant.Config{ClientID: testClient, Environment: environment(f.emu)},
		ClientSecret: testSecret,
		Registry:     f.reg,
		Logger:       slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ReadTimeout:  2 * time.Second,
	}
	if o.modify != nil {
		o.modify(&f.cfg)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", f.logs)
		}
	})
	srv, err := daemon.New(f.cfg)
	if err != nil {
		t.Fatalf("daemon.New: %v", err)
	}
	f.srv = srv
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	f.sock = socketPath(t)
	ln, err := daemon.Listen("unix:"+f.sock, daemon.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	f.unix = unixClient(f.sock)
	t.Cleanup(f.unix.CloseIdleConnections)
	if !o.noTCP {
		tl, err := daemon.Listen("tcp:127.0.0.1:0", daemon.ListenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f.tcp = "http://" + tl.Addr().String()
		go srv.Serve(tl)
		f.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
		t.Cleanup(f.client.CloseIdleConnections)
	}
	return f
}

// socketPath returns a short path for a unix socket (sun_path holds 108
// bytes; t.TempDir can be longer).
func socketPath(t testing.TB) string {
	dir, err := os.MkdirTemp("", "mphsm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "d.sock")
}

func unixClient(path string) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 1024,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", path)
			},
		},
	}
}

// tokenAnswer is a decoded answer of POST /token, success or error.
type tokenAnswer struct {
	Status      int
	Header      http.Header
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// post sends form to the daemon over the unix socket.
func (f *fixture) post(form url.Values) tokenAnswer {
	f.t.Helper()
	return postTo(f.t, f.unix, "http://mp-hsm/token", form, nil)
}

func postTo(t testing.TB, c *http.Client, u string, form url.Values, prepare func(*http.Request)) tokenAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if prepare != nil {
		prepare(req)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := tokenAnswer{Status: resp.StatusCode, Header: resp.Header}
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("POST %s: %d, body %q is not JSON: %v", u, resp.StatusCode, body, err)
	}
	return a
}

func scopeForm(scope string, kv ...string) url.Values {
	v := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// wantToken fails unless a is a token answer.
func wantToken(t testing.TB, a tokenAnswer) {
	t.Helper()
	if a.Status != http.StatusOK || a.AccessToken == "" || a.TokenType != "Bearer" || a.ExpiresIn <= 0 {
		t.Fatalf("answer %d %+v, want a token", a.Status, a)
	}
}

// wantError fails unless a is the OAuth 2 error code with status.
func wantError(t testing.TB, a tokenAnswer, status int, code string) {
	t.Helper()
	if a.Status != status || a.Error != code || a.Description == "" || a.AccessToken != "" {
		t.Fatalf("answer %d %q (%s), want %d %q", a.Status, a.Error, a.Description, status, code)
	}
}

// claims verifies an access token from the emulator and returns its claims.
func (f *fixture) claims(access string) jwt.MapClaims {
	f.t.Helper()
	var c jwt.MapClaims
	_, err := jwt.ParseWithClaims(access, &c, func(*jwt.Token) (any, error) { return f.emu.PublicKey(), nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithLeeway(0))
	if err != nil {
		f.t.Fatalf("access token does not verify or has expired: %v", err)
	}
	return c
}

// get returns the status and body of GET path over the unix socket.
func (f *fixture) get(path string) (int, string) {
	f.t.Helper()
	resp, err := f.unix.Get("http://mp-hsm" + path)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of the series named by its exposition prefix,
// such as `mphsm_token_requests_total{result="ok"}`; -1 if absent.
func (f *fixture) metric(series string) float64 {
	f.t.Helper()
	_, body := f.get("/metrics")
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				f.t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	return -1
}

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removable is a test double at the signer boundary for a card that can be
// pulled out: while removed, the signer it opened fails every signature and
// probe with CKR_DEVICE_REMOVED (hsm.ErrTokenRemoved), and opening fails
// with CKR_TOKEN_NOT_PRESENT. Restored, it opens the real SoftHSM2 key
// again, with a real login.
type removable struct {
	cfg     signer.Config
	removed atomic.Bool
	opens   atomic.Int64
}

func (r *removable) isRemoved() bool  { return r.removed.Load() }
func (r *removable) set(removed bool) { r.removed.Store(removed) }

func (r *removable) open(context.Context) (signer.Signer, error) {
	r.opens.Add(1)
	if r.isRemoved() {
		return nil, &hsm.Error{Op: "C_GetTokenInfo", Kind: hsm.ErrTokenRemoved, Code: pkcs11.CKR_TOKEN_NOT_PRESENT}
	}
	s, err := signer.Open(r.cfg)
	if err != nil {
		return nil, err
	}
	return &removableSigner{TokenSigner: s, r: r}, nil
}

type removableSigner struct {
	*signer.TokenSigner
	r *removable
}

func (s *removableSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if s.r.isRemoved() {
		return nil, &hsm.Error{Op: "C_Sign", Kind: hsm.ErrTokenRemoved, Code: pkcs11.CKR_DEVICE_REMOVED}
	}
	return s.TokenSigner.Sign(rand, digest, opts)
}

func (s *removableSigner) Probe(context.Context) error {
	if s.r.isRemoved() {
		return &hsm.Error{Op: "C_GetTokenInfo", Kind: hsm.ErrTokenRemoved, Code: pkcs11.CKR_DEVICE_REMOVED}
	}
	_, err := s.Key().Token().Info()
	return err
}

var _ daemon.Prober = (*removableSigner)(nil)

func describe(a tokenAnswer) string { return fmt.Sprintf("%d %s %s", a.Status, a.Error, a.Description) }

func jsonDecode(resp *http.Response, a *tokenAnswer) error {
	a.Status, a.Header = resp.StatusCode, resp.Header
	return json.NewDecoder(resp.Body).Decode(a)
}
