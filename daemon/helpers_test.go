package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
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

	"github.com/mp-hsm/mp-hsm/daemon/socket"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

const (
	testClient = "daemon-test-client"
	testSecret = "local-s3cret-4b9e2f"
	testOrg    = "910000004" // the client's organisation, in every test certificate
	consumer   = "910000012" // a valid organisation number, delegated to the client
	sysUserOrg = "910000020"
)

var testScopes = []string{"test:read", "test:write", "altinn:serviceowner", "test:other"}

// The daemon's tests need no cgo: their keys are in memory (signer.FileSigner)
// with certificates from the test root below, made in pure Go. With cgo,
// sharedOpener signs on a SoftHSM2 token instead (softhsm_test.go), whose
// certificate comes from the same root; without, on a key in memory
// (nocgo_test.go).

// shared is what many tests use and is slow to make: the test root, the
// emulator's key, and a key in memory with its certificate.
var shared struct {
	once      sync.Once
	root      *x509.Certificate
	rootKey   *rsa.PrivateKey
	emuKey    crypto.Signer
	err       error
	serial    atomic.Int64
	notBefore time.Time

	fileKeyOnce sync.Once
	fileKey     *signer.FileSigner
	fileKeyErr  error
}

// setupPKI makes the shared root and keys once.
func setupPKI() error {
	shared.once.Do(func() {
		shared.notBefore = time.Now().Add(-time.Hour)
		if shared.rootKey, shared.err = rsa.GenerateKey(rand.Reader, 2048); shared.err != nil {
			return
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "mp-hsm daemon test root", Organization: []string{"mp-hsm"}},
			NotBefore:             shared.notBefore,
			NotAfter:              shared.notBefore.Add(10 * 365 * 24 * time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &shared.rootKey.PublicKey, shared.rootKey)
		if err != nil {
			shared.err = err
			return
		}
		if shared.root, shared.err = x509.ParseCertificate(der); shared.err != nil {
			return
		}
		shared.emuKey, shared.err = rsa.GenerateKey(rand.Reader, 2048)
	})
	return shared.err
}

func setup(t testing.TB) {
	t.Helper()
	if err := setupPKI(); err != nil {
		t.Fatal(err)
	}
}

// issueLeaf returns a certificate for pub of organisation testOrg, issued
// by the test root, as an enterprise certificate names its organisation.
func issueLeaf(pub crypto.PublicKey) (*x509.Certificate, error) {
	if err := setupPKI(); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(100 + shared.serial.Add(1)),
		Subject: pkix.Name{
			CommonName:   "MP-HSM TEST AS",
			Organization: []string{"MP-HSM TEST AS"},
			SerialNumber: testOrg,
			ExtraNames:   []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 97}, Value: "NTRNO-" + testOrg}},
		},
		NotBefore: shared.notBefore,
		NotAfter:  shared.notBefore.Add(365 * 24 * time.Hour),
		KeyUsage:  x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, shared.root, pub, shared.rootKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// newFileKey returns a new RSA key in memory with its certificate from the
// test root: another key of the same organisation.
func newFileKey() (*signer.FileSigner, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	leaf, err := issueLeaf(key.Public())
	if err != nil {
		return nil, err
	}
	return signer.NewFileSigner(key, []*x509.Certificate{leaf})
}

// fileKey returns a new key in memory (see newFileKey), failing t if it
// cannot be made.
func fileKey(t testing.TB) *signer.FileSigner {
	t.Helper()
	s, err := newFileKey()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sharedFileKey returns the key in memory made once for the package.
//
//lint:ignore U1000 used by nocgo_test.go, which builds without cgo
func sharedFileKey(t testing.TB) *signer.FileSigner {
	t.Helper()
	shared.fileKeyOnce.Do(func() { shared.fileKey, shared.fileKeyErr = newFileKey() })
	if shared.fileKeyErr != nil {
		t.Fatal(shared.fileKeyErr)
	}
	return shared.fileKey
}

// newEmulator starts an emulator that trusts the test CA and knows
// testClient, with tokens living lifetime (0: 120 s).
func newEmulator(t testing.TB, lifetime time.Duration) *emulator.Server {
	t.Helper()
	setup(t)
	return emulator.NewTest(t, emulator.Config{
		Roots: []*x509.Certificate{shared.root},
		Clients: []emulator.Client{{
			ID:             testClient,
			OrgNumber:      testOrg,
			Scopes:         testScopes,
			DelegatedBy:    []string{consumer},
			SystemUserOrgs: []string{sysUserOrg},
		}},
		Consents:      []emulator.Consent{{ID: testConsentID, From: testConsentFrom, To: testOrg}},
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
	open     func(context.Context) (signer.Signer, error) // if nil, sharedOpener
	modify   func(*daemon.Config)
	noTCP    bool
}

func newFixture(t testing.TB, o options) *fixture {
	t.Helper()
	open := o.open
	if open == nil {
		open = sharedOpener(t)
	}
	f := &fixture{t: t, emu: newEmulator(t, o.lifetime), reg: prometheus.NewRegistry(), logs: &logBuffer{}}
	f.cfg = daemon.Config{
		OpenSigner:   open,
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
	ln, err := socket.Listen("unix:"+f.sock, socket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	f.unix = unixClient(f.sock)
	t.Cleanup(f.unix.CloseIdleConnections)
	if !o.noTCP {
		tl, err := socket.Listen("tcp:127.0.0.1:0", socket.Options{})
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
// probe with tokenerr.ErrTokenRemoved, as hsm reports CKR_DEVICE_REMOVED,
// and opening fails so too (CKR_TOKEN_NOT_PRESENT). Restored, it opens the
// key with inner again: with cgo, the SoftHSM2 token with a real login.
type removable struct {
	inner   func(context.Context) (signer.Signer, error)
	removed atomic.Bool
	opens   atomic.Int64
}

func (r *removable) isRemoved() bool  { return r.removed.Load() }
func (r *removable) set(removed bool) { r.removed.Store(removed) }

func (r *removable) open(ctx context.Context) (signer.Signer, error) {
	r.opens.Add(1)
	if r.isRemoved() {
		return nil, fmt.Errorf("C_GetTokenInfo: %w", tokenerr.ErrTokenRemoved)
	}
	s, err := r.inner(ctx)
	if err != nil {
		return nil, err
	}
	return &removableSigner{Signer: s, r: r}, nil
}

type removableSigner struct {
	signer.Signer
	r *removable
}

func (s *removableSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if s.r.isRemoved() {
		return nil, fmt.Errorf("C_Sign: %w", tokenerr.ErrTokenRemoved)
	}
	return s.Signer.Sign(rand, digest, opts)
}

func (s *removableSigner) Probe(ctx context.Context) error {
	if s.r.isRemoved() {
		return fmt.Errorf("C_GetTokenInfo: %w", tokenerr.ErrTokenRemoved)
	}
	if p, ok := s.Signer.(daemon.Prober); ok {
		return p.Probe(ctx)
	}
	return nil
}

// Close closes the key opened, as the daemon closes every signer it drops.
func (s *removableSigner) Close() error {
	if c, ok := s.Signer.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

var _ daemon.Prober = (*removableSigner)(nil)

func describe(a tokenAnswer) string { return fmt.Sprintf("%d %s %s", a.Status, a.Error, a.Description) }

func jsonDecode(resp *http.Response, a *tokenAnswer) error {
	a.Status, a.Header = resp.StatusCode, resp.Header
	return json.NewDecoder(resp.Body).Decode(a)
}
