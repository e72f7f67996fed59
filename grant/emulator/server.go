package emulator

import (
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/signer"
)

// Server is a Maskinporten emulator shaped like httptest.Server, safe for concurrent use.
type Server struct {
	URL string // http://127.0.0.1:port without a trailing slash, set by Start or StartOn

	cfg     Config
	jwk     *signer.JWK // Config.Key's public half as /jwks shows it; its kid is the RFC 7638 thumbprint
	roots   *x509.CertPool
	handler http.Handler

	mu        sync.Mutex
	clients   map[string]Client
	jtis      map[string]time.Time   // jti -> grant exp, for pruning
	jwks      map[string]*clientJWKS // key sets by client
	nextPrune time.Time
	stats     Stats

	failN, failStatus, dropN int
	latency, dateOffset      time.Duration

	ts      *httptest.Server
	closing context.Context // done once Close is called, to cut latency short
	stop    context.CancelFunc
}

// NewServer starts a new emulator on 127.0.0.1; Close it when done. Like
// httptest, it panics if it cannot start.
func NewServer(cfg Config) *Server {
	s := NewUnstartedServer(cfg)
	s.Start()
	return s
}

// NewTest starts an emulator for the test tb and closes it when the test
// ends. If cfg.Logf is nil, the server logs through tb.Logf.
func NewTest(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	if cfg.Logf == nil {
		cfg.Logf = tb.Logf
	}
	s := NewServer(cfg)
	tb.Cleanup(s.Close)
	return s
}

// NewUnstartedServer returns an emulator not yet listening (call Start or StartOn). It
// panics on a Key that is not RSA, and on a client or consent AddClient or Consents refuse.
func NewUnstartedServer(cfg Config) *Server {
	for d, def := range map[*time.Duration]time.Duration{&cfg.TokenLifetime: 120 * time.Second, &cfg.MaxGrantLifetime: 120 * time.Second, &cfg.ClockSkew: 10 * time.Second} {
		if *d <= 0 {
			*d = def
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Key == nil {
		cfg.Key, _ = rsa.GenerateKey(rand.Reader, 2048) // cannot fail: crypto/rand does not
	}
	jwk, err := signer.PublicJWK(cfg.Key.Public(), "RS256", "")
	if err != nil {
		panic("emulator: Config.Key must be an RSA key (Maskinporten signs with RS256): " + err.Error())
	}
	s := &Server{
		cfg:     cfg,
		jwk:     jwk,
		roots:   x509.NewCertPool(),
		clients: make(map[string]Client),
		jtis:    make(map[string]time.Time),
		jwks:    make(map[string]*clientJWKS),
		stats:   Stats{Rejected: make(map[string]int)},
	}
	s.closing, s.stop = context.WithCancel(context.Background())
	for _, r := range cfg.Roots {
		s.roots.AddCert(r)
	}
	made := cfg.Now()
	s.cfg.Consents = slices.Clone(cfg.Consents)
	for i := range s.cfg.Consents {
		c := &s.cfg.Consents[i]
		if c.ID == "" || c.From == "" || !isDigits(c.To, 9) {
			panic(fmt.Sprintf("emulator: consent %q: ID and From are required, and To must be 9 digits (%q)", c.ID, c.To))
		}
		c.Consented = cmp.Or(c.Consented, made)
		c.ValidTo = cmp.Or(c.ValidTo, c.Consented.AddDate(1, 0, 0))
	}
	for _, c := range cfg.Clients {
		s.AddClient(c)
	}
	mux := http.NewServeMux()
	// The mux answers 405 to other methods than GET and HEAD.
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.serveMetadata)
	mux.HandleFunc("GET /jwks", s.serveJWKS)
	mux.HandleFunc("/token", s.serveToken)
	mux.HandleFunc("GET "+altinnExchangePath, s.serveAltinnExchange)
	mux.HandleFunc(adminAPIPath+"clients/{id}/jwks", s.serveClientJWKS)
	s.handler = mux
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.ts.Config.ReadHeaderTimeout = 10 * time.Second
	return s
}

// Start starts the server on 127.0.0.1 and a port the system chooses, or panics.
func (s *Server) Start() {
	s.URL = "http://" + s.ts.Listener.Addr().String() // set before serving: handlers read it
	s.ts.Start()
}

// StartOn starts the server on addr (host:port), for `mp-hsm emulate --listen`.
func (s *Server) StartOn(addr string) error {
	if s.URL != "" {
		return errors.New("server already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ts.Listener.Close()
	s.ts.Listener = ln
	s.Start()
	return nil
}

// Close stops the server: it cuts latency short, waits for the answers
// under way, and closes all connections. It is idempotent.
func (s *Server) Close() {
	s.stop()
	s.ts.Close() // itself idempotent
}

// Issuer returns the issuer identifier with its trailing slash, the aud a
// grant must carry: Config.Issuer, else URL + "/" (empty before Start).
func (s *Server) Issuer() string {
	if s.cfg.Issuer != "" || s.URL == "" {
		return s.cfg.Issuer
	}
	return s.URL + "/"
}

// MetadataURL returns the URL of the RFC 8414 metadata.
func (s *Server) MetadataURL() string { return s.URL + "/.well-known/oauth-authorization-server" }

// TokenURL returns the URL of the token endpoint.
func (s *Server) TokenURL() string { return s.URL + "/token" }

// JWKSURL returns the URL of the JWK set holding the token-signing key.
func (s *Server) JWKSURL() string { return s.URL + "/jwks" }

// AltinnExchangeURL returns the URL of the emulated Altinn token exchange.
func (s *Server) AltinnExchangeURL() string { return s.URL + altinnExchangePath }

// PublicKey returns the *rsa.PublicKey that verifies the server's access and Altinn tokens (RS256).
func (s *Server) PublicKey() crypto.PublicKey { return s.cfg.Key.Public() }

// AddClient registers c, replacing any client with the same ID, also while
// the server runs. It panics if c has no ID or its OrgNumber is not 9 digits.
func (s *Server) AddClient(c Client) {
	if c.ID == "" {
		panic("emulator: client without ID")
	}
	if !isDigits(c.OrgNumber, 9) {
		panic(fmt.Sprintf("emulator: client %q: OrgNumber %q is not 9 digits", c.ID, c.OrgNumber))
	}
	c.Scopes = slices.Clone(c.Scopes)
	keys := make(map[string]crypto.PublicKey, len(c.Keys))
	for kid, k := range c.Keys {
		switch k := k.(type) {
		case rsa.PublicKey:
			keys[kid] = &k
		case *x509.Certificate:
			keys[kid] = k.PublicKey
		default:
			keys[kid] = k
		}
	}
	c.Keys = keys
	c.DelegatedBy = slices.Clone(c.DelegatedBy)
	c.SystemUserOrgs = slices.Clone(c.SystemUserOrgs)
	j := &clientJWKS{Keys: []any{}} // as the self-service API shows it
	for _, kid := range slices.Sorted(maps.Keys(keys)) {
		if k, err := signer.PublicJWK(keys[kid], "", kid); err == nil {
			j.Keys = append(j.Keys, k)
		}
	}
	if len(j.Keys) > 0 {
		j.Created = s.cfg.Now().UTC().Format(time.RFC3339)
		j.Updated = j.Created
	}
	s.locked(func() { s.clients[c.ID], s.jwks[c.ID] = c, j })
}

func (s *Server) client(id string) (c Client, ok bool) {
	s.locked(func() { c, ok = s.clients[id] })
	return c, ok
}

// Stats returns a copy of the counters.
func (s *Server) Stats() (st Stats) {
	s.locked(func() { st = s.stats; st.Rejected = maps.Clone(s.stats.Rejected) })
	return st
}

// serveHTTP applies latency and the Date header to every answer.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	var latency time.Duration
	s.locked(func() { latency = s.latency })
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-s.closing.Done():
			t.Stop()
			panic(http.ErrAbortHandler) // close the connection without an answer
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	w.Header().Set("Date", s.date())
	s.handler.ServeHTTP(w, r)
}

// useJTI records jti and reports whether it was new.
func (s *Server) useJTI(jti string, exp time.Time) bool {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, seen := s.jtis[jti]; seen {
		return false
	}
	// A grant cannot be accepted after exp + skew, so its jti need not be
	// remembered longer: forget such entries now and then.
	if len(s.jtis) > 4096 && now.After(s.nextPrune) {
		for k, e := range s.jtis {
			if now.After(e.Add(s.cfg.ClockSkew)) {
				delete(s.jtis, k)
			}
		}
		s.nextPrune = now.Add(time.Minute)
	}
	s.jtis[jti] = exp
	s.stats.JTIs++
	return true
}

func (s *Server) locked(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

func (s *Server) count(f func(st *Stats)) { s.locked(func() { f(&s.stats) }) }

// FailNext makes the next n requests to /token answer status (such as 503) with a
// Maskinporten-shaped error, before looking at the grant; 503 and 429 carry Retry-After: 1.
func (s *Server) FailNext(n int, status int) { s.locked(func() { s.failN, s.failStatus = n, status }) }

// SetLatency delays every answer by d; Close cuts the delay short.
func (s *Server) SetLatency(d time.Duration) { s.locked(func() { s.latency = d }) }

// DropNext makes the next n requests to /token fail mid-answer: the
// connection closes within the body of a 200 answer (an unexpected EOF).
func (s *Server) DropNext(n int) { s.locked(func() { s.dropN = n }) }

// SetDateOffset makes the Date header of every answer lie by d.
func (s *Server) SetDateOffset(d time.Duration) { s.locked(func() { s.dateOffset = d }) }

func (s *Server) date() (d string) {
	s.locked(func() { d = s.cfg.Now().Add(s.dateOffset).UTC().Format(http.TimeFormat) })
	return d
}

func (s *Server) fault() (drop bool, failStatus int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.TokenRequests++
	switch {
	case s.dropN > 0:
		s.dropN, drop = s.dropN-1, true
	case s.failN > 0:
		s.failN, failStatus = s.failN-1, s.failStatus
	default:
		return false, 0
	}
	s.stats.Injected++
	return drop, failStatus
}

// drop writes the head of a 200 answer and part of its body, and hangs up.
func (s *Server) drop(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nDate: " + s.date() + "\r\nContent-Type: application/json;charset=UTF-8\r\n" +
		"Content-Length: 1024\r\n\r\n" + `{"access_token":"eyJ`)
	_ = buf.Flush()
}
