package daemon

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mp-hsm/mp-hsm/daemon/socket"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
)

// The tests of the daemon's defences (per-caller bounds, fair share,
// failed authentication) need no card: the daemon's key is an RSA key in
// memory, registered on the emulator by kid, and requests go to ServeHTTP
// as a given caller (a unix socket peer's uid, or a TCP address).

const (
	defClient = "defences-client"
	defKid    = "defences-key"
	defSecret = "defences-s3cret-7d1a"
)

var defKeys struct {
	once     sync.Once
	key, emu *rsa.PrivateKey
	err      error
}

func defKeyPair(t testing.TB) (key, emu *rsa.PrivateKey) {
	t.Helper()
	defKeys.once.Do(func() {
		if defKeys.key, defKeys.err = rsa.GenerateKey(rand.Reader, 2048); defKeys.err == nil {
			defKeys.emu, defKeys.err = rsa.GenerateKey(rand.Reader, 2048)
		}
	})
	if defKeys.err != nil {
		t.Fatal(defKeys.err)
	}
	return defKeys.key, defKeys.emu
}

// countingSigner counts signatures.
type countingSigner struct {
	signer.Signer
	n atomic.Int64
}

func (c *countingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	c.n.Add(1)
	return c.Signer.Sign(r, digest, opts)
}

// syncBuffer is a log that tests read while the daemon writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// defFixture is a ready Server with the emulator as Maskinporten.
type defFixture struct {
	t      testing.TB
	srv    *Server
	emu    *emulator.Server
	signer *countingSigner
	logs   *syncBuffer
}

// defScopes are the scopes the emulator's client may have.
var defScopes = []string{"test:read", "test:s0", "test:s1", "test:s2", "test:s3", "test:s4", "test:s5", "test:s6", "test:s7", "test:s8", "test:s9"}

func newDefFixture(t testing.TB, modify func(*Config)) *defFixture {
	t.Helper()
	key, emuKey := defKeyPair(t)
	f := &defFixture{t: t, logs: &syncBuffer{}}
	f.emu = emulator.NewTest(t, emulator.Config{
		Clients: []emulator.Client{{ID: defClient, OrgNumber: "910000004", Scopes: defScopes,
			Keys: map[string]crypto.PublicKey{defKid: key.Public()}}},
		Key:  emuKey,
		Logf: func(string, ...any) {},
	})
	fs, err := signer.NewFileSigner(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.signer = &countingSigner{Signer: fs}
	cfg := Config{
		OpenSigner: func(context.Context) (signer.Signer, error) { return f.signer, nil },
		Grant: grant.Config{ClientID: defClient, KeyID: defKid,
			Environment: grant.Environment{Issuer: f.emu.Issuer(), TokenEndpoint: f.emu.TokenURL()}},
		ClientSecret:  defSecret,
		ProbeInterval: -1,
		Logger:        slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if modify != nil {
		modify(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.srv = srv
	t.Cleanup(func() {
		f.emu.Close() // cuts a latency short
		srv.Shutdown(context.Background())
		if t.Failed() {
			t.Logf("daemon log:\n%s", f.logs)
		}
	})
	return f
}

// defAnswer is a decoded answer of POST /token.
type defAnswer struct {
	Status      int
	Header      http.Header
	AccessToken string `json:"access_token"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

func (a defAnswer) String() string {
	return fmt.Sprintf("%d %s %s", a.Status, a.Error, a.Description)
}

// unixPeer makes a request come from a unix socket peer of uid.
func unixPeer(uid uint32) func(*http.Request) *http.Request {
	return func(r *http.Request) *http.Request {
		ctx := context.WithValue(r.Context(), http.LocalAddrContextKey, &net.UnixAddr{Name: "/run/mp-hsm.sock", Net: "unix"})
		return r.WithContext(context.WithValue(ctx, peerKey{}, &socket.Peer{UID: uid, GID: uid}))
	}
}

// tcpPeer makes a request come from addr ("192.0.2.7:40000") on TCP with
// the daemon's client id and secret.
func tcpPeer(addr, secret string) func(*http.Request) *http.Request {
	return func(r *http.Request) *http.Request {
		r.RemoteAddr = addr
		r.Host = "127.0.0.1:8400"
		r.SetBasicAuth(defClient, secret)
		return r
	}
}

// ask sends form to ServeHTTP from the caller that from makes.
func (f *defFixture) ask(from func(*http.Request) *http.Request, form url.Values) defAnswer {
	f.t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r = from(r)
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, r)
	a := defAnswer{Status: w.Code, Header: w.Header()}
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		f.t.Errorf("answer %d %q is not JSON: %v", w.Code, w.Body, err)
	}
	return a
}

// tokenForm is a client-credentials form for scope and resources.
func tokenForm(scope string, resources ...string) url.Values {
	v := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
	for _, r := range resources {
		v.Add("resource", r)
	}
	return v
}

func wantTokenAnswer(t testing.TB, a defAnswer) {
	t.Helper()
	if a.Status != http.StatusOK || a.AccessToken == "" {
		t.Fatalf("answer %s, want a token", a)
	}
}

func wantErrorAnswer(t testing.TB, a defAnswer, status int, code string) {
	t.Helper()
	if a.Status != status || a.Error != code || a.AccessToken != "" {
		t.Fatalf("answer %s, want %d %s", a, status, code)
	}
}
