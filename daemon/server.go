package daemon

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mp-hsm/mp-hsm/daemon/socket"
)

// Server is the token daemon. Make one with New, give it listeners with
// Serve, and stop it with Shutdown. It is an http.Handler too. All methods
// are safe for concurrent use.
type Server struct {
	st       atomic.Pointer[settings]
	reg      *prometheus.Registry
	metrics  *metrics
	metricsH http.Handler
	adm      *admission // the MaxConcurrent slots for exchanges
	cache    *cache
	quotas   quotas       // per-caller bounds on the cache
	authFail authFailures // failed authentication on TCP, per address
	refusals tallies      // refusals of callers no client admits, summarized in the audit log

	ctx    context.Context // ends when the server stops
	cancel context.CancelFunc
	bgMu   sync.Mutex // orders bg.Add against stopBackground
	bg     sync.WaitGroup

	mu           sync.Mutex
	looping      bool         // the reconnect loop runs
	openFailures atomic.Int64 // the reconnect loop's failed attempts (awaitReconnect)
	identity     string       // of the cached tokens' keys
	servers      []*http.Server
	lns          []net.Listener // what Serve was given: Reload checks them
	closing      bool           // Shutdown has begun

	stat     atomic.Pointer[status] // replaced under mu, read without it
	lastLeaf atomic.Pointer[x509.Certificate]
}

type state int

const (
	stateStarting     state = iota
	stateReady              // logged in and able to sign
	stateFault              // the card or HSM failed; reconnecting
	stateLoginRefused       // the PIN was refused; waiting for Reload
	stateClosed             // Shutdown was called
)

// status is one state of the daemon, never changed: a new one replaces it.
type status struct {
	state  state
	reason string // why it is not ready
	conn   *conn  // the signer; set exactly when ready
}

// New checks cfg, opens the key with cfg.OpenSigner (one login) and returns
// a Server ready to Serve.
//
// If the token is absent or the device fails at start (tokenerr.Transient:
// ErrNoToken, ErrTokenRemoved, ErrDevice, ...), New still returns a Server,
// not ready and reconnecting in the background. Any other error, such as a
// refused PIN, a key not found or an invalid Config (ErrConfig), is
// returned and nothing keeps running.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{reg: reg, cache: newCache(cfg), refusals: newTallies(), authFail: authFailures{newTallies(), sleepCtx}}
	s.metrics = newMetrics(s)
	st, err := newSettings(cfg, s.metrics)
	if err != nil {
		return nil, err
	}
	s.st.Store(st)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.stat.Store(&status{state: stateStarting, reason: "starting"})
	s.adm = newAdmission(cfg.MaxConcurrent, cfg.MaxConcurrentPerCaller, s.metrics)
	s.metricsH = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: log.New(logWriter{cfg.Logger, slog.LevelError, "metrics: "}, "", 0)})

	c, err := s.open(s.ctx, st)
	s.mu.Lock()
	switch {
	case err == nil:
		s.installLocked(c)
	case isTransient(err):
		s.setStateLocked(stateFault, "the card or HSM is not available ("+err.Error()+"); waiting for it")
		s.startLoopLocked()
	default:
		s.mu.Unlock()
		s.cancel()
		return nil, err
	}
	s.mu.Unlock()
	if err != nil {
		cfg.Logger.Warn("the card or HSM is not available; starting not ready and waiting for it", "error", err)
	} else {
		s.logReady(c, "logged in: ready")
	}
	for _, col := range s.metrics.collectors() {
		if err := reg.Register(col); err != nil {
			s.stopBackground()
			s.closeConn()
			return nil, fmt.Errorf("%w: Registry: %w", ErrConfig, err)
		}
	}
	s.goBackground(s.probeLoop)
	return s, nil
}

// Registry returns the registry the metrics are in and /metrics serves.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

func (s *Server) settings() *settings { return s.st.Load() }

func (s *Server) log() *slog.Logger { return s.settings().cfg.Logger }

func (s *Server) status() *status { return s.stat.Load() }

// setStateLocked makes the daemon not ready, in st, for reason. s.mu must
// be held.
func (s *Server) setStateLocked(st state, reason string) {
	s.stat.Store(&status{state: st, reason: reason})
}

// goBackground runs f in a goroutine that Shutdown waits for; false if the
// server is stopping.
func (s *Server) goBackground(f func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.bg.Go(f)
	return true
}

// Ready reports whether the daemon is logged in and able to sign, and if
// not, why. An expired certificate makes it not ready.
func (s *Server) Ready() (bool, string) {
	if st := s.status(); st.state != stateReady {
		return false, st.reason
	}
	if leaf := s.lastLeaf.Load(); leaf != nil && time.Now().After(leaf.NotAfter) {
		return false, fmt.Sprintf("the certificate %q expired at %s; renew it", leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return true, ""
}

func (s *Server) notReady() error {
	_, reason := s.Ready()
	if reason == "" {
		reason = "not ready"
	}
	return &notReadyError{reason: reason}
}

// callerID is who asks, for the per-caller bounds (slots, keys, resources),
// failed authentication and refusals: on a unix socket the peer's uid, on
// TCP the remote address, IPv6 by its /64 (a host has a whole /64), every
// loopback address as one (any local program may pick any). It is
// comparable, for map keys, and made without allocating.
type callerID struct {
	unix    bool
	refresh bool       // refreshCaller
	uid     int64      // unix: the peer's uid; -1 if unknown
	ip      netip.Addr // TCP: the address or /64 prefix; invalid if unknown
}

// refreshCaller stands for the daemon's own background refreshes.
var refreshCaller = callerID{refresh: true, uid: -1}

// loopbackCaller is the address every loopback TCP caller is counted as.
var loopbackCaller = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// String names the caller in logs and error descriptions.
func (c callerID) String() string {
	switch {
	case c.refresh:
		return "background refreshes"
	case c.unix && c.uid >= 0:
		return "uid " + strconv.FormatInt(c.uid, 10)
	case c.unix:
		return "unix socket peer of unknown uid"
	case c.ip == loopbackCaller:
		return "loopback TCP (127.0.0.0/8, ::1)"
	case c.ip.Is6():
		return c.ip.String() + "/64"
	case c.ip.IsValid():
		return c.ip.String()
	}
	return "unknown address"
}

// addressOf returns a TCP peer "host:port" as callerID keeps it.
func addressOf(hostport string) netip.Addr {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return netip.Addr{}
	}
	ip := ap.Addr().Unmap().WithZone("")
	if ip.IsLoopback() {
		return loopbackCaller
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return ip
}

// peerKey is the context key of a unix socket's *socket.Peer, read once
// per connection (connContext).
type peerKey struct{}

func connContext(ctx context.Context, c net.Conn) context.Context {
	if p := socket.PeerOf(c); p != nil {
		return context.WithValue(ctx, peerKey{}, p)
	}
	return ctx
}

// ServeHTTP answers POST /token, GET /healthz, /readyz, /metrics and the
// authorization server metadata (RFC 8414, at
// /.well-known/oauth-authorization-server and
// /.well-known/openid-configuration). It establishes who asks once: on a
// unix socket, the peer; on TCP, the address, whose Host header must name
// the daemon (else 421, see Config.AllowedHosts).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	who := callerID{uid: -1}
	var peer *socket.Peer
	if la != nil && la.Network() == "unix" {
		who.unix = true
		if peer, _ = r.Context().Value(peerKey{}).(*socket.Peer); peer != nil {
			who.uid = int64(peer.UID)
		}
	} else {
		who.ip = addressOf(r.RemoteAddr)
		if !hostAllowed(r.Host, la, s.settings()) {
			writeText(w, http.StatusMisdirectedRequest, "421 misdirected request: the Host header does not name this daemon. "+
				"It answers on TCP only to localhost, a loopback address, its listen address, or a name its operator allows (--allowed-hosts); "+
				"this protects it from DNS rebinding.\n")
			return
		}
	}
	switch r.URL.Path {
	case "/token":
		s.serveToken(w, r, who, peer)
	case "/healthz":
		if getOnly(w, r) {
			writeText(w, http.StatusOK, "ok\n")
		}
	case "/readyz":
		if !getOnly(w, r) {
		} else if ok, reason := s.Ready(); ok {
			writeText(w, http.StatusOK, "ready\n")
		} else {
			writeText(w, http.StatusServiceUnavailable, "not ready: "+reason+"\n")
		}
	case "/metrics":
		if getOnly(w, r) {
			s.metricsH.ServeHTTP(w, r)
		}
	case "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration":
		if getOnly(w, r) {
			s.serveMetadata(w, r, who.unix, la)
		}
	default:
		s.writeError(w, &oauthError{status: http.StatusNotFound, code: errInvalidRequest,
			description: "no such endpoint; the token endpoint is POST /token"})
	}
}

// hostAllowed reports whether a TCP request's Host names the daemon as
// this machine knows it: localhost, a loopback address, the address the
// connection came to, or an AllowedHosts name; any port. Anything else is
// a name that merely resolves here, as DNS rebinding makes a browser send.
// No Host (HTTP/1.0; no browser) is allowed.
func hostAllowed(host string, la net.Addr, st *settings) bool {
	if host == "" {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || st.hosts[host] {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	if ip = ip.Unmap().WithZone(""); ip.IsLoopback() {
		return true
	}
	tcp, ok := la.(*net.TCPAddr)
	if !ok {
		return false
	}
	local, _ := netip.AddrFromSlice(tcp.IP)
	return local.Unmap() == ip
}

// serveMetadata answers the RFC 8414 metadata. The URLs are those by
// which the request reached the daemon (its Host; without one, the
// listener's address on TCP and http://mp-hsm, which resolves nowhere, on a
// unix socket), so the issuer is the URL the client discovered it from.
// The auth methods are what the listener accepts.
func (s *Server) serveMetadata(w http.ResponseWriter, r *http.Request, unix bool, la net.Addr) {
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	issuer := scheme + r.Host
	switch {
	case r.Host != "":
	case unix:
		issuer = "http://mp-hsm"
	case la != nil:
		issuer = scheme + la.String()
	default:
		issuer = scheme + "localhost"
	}
	methods := []string{string(authBasic), string(authPost)}
	if unix {
		methods = []string{string(authNone), string(authBasic), string(authPost)}
	}
	types := []string{}
	for _, c := range s.settings().clients {
		for typ := range c.authzTypes {
			types = append(types, typ)
		}
	}
	slices.Sort(types)
	h := w.Header()
	h["Content-Type"], h["Cache-Control"] = hdrJSON, hdrNoStore
	_ = json.NewEncoder(w).Encode(struct {
		Issuer        string   `json:"issuer"`
		TokenEndpoint string   `json:"token_endpoint"`
		GrantTypes    []string `json:"grant_types_supported"`
		AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
		ResponseTypes []string `json:"response_types_supported"` // required; no authorization endpoint
		AuthzTypes    []string `json:"authorization_details_types_supported"`
	}{issuer, issuer + "/token", []string{"client_credentials"}, methods, []string{}, slices.Compact(types)})
}

func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeText(w, http.StatusMethodNotAllowed, "method not allowed\n")
	return false
}

func writeText(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// Serve answers requests on ln until Shutdown, then returns
// http.ErrServerClosed. It refuses (and closes) a listener the
// configuration would open to more callers than it means to serve (see
// checkListener); Reload checks its configuration against the same
// listeners.
func (s *Server) Serve(ln net.Listener) error {
	st := s.settings()
	hs := &http.Server{
		Handler:           s,
		ConnContext:       connContext,
		ReadHeaderTimeout: st.cfg.ReadTimeout / 2,
		ReadTimeout:       st.cfg.ReadTimeout,
		WriteTimeout:      st.cfg.WriteTimeout,
		IdleTimeout:       st.cfg.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// net/http's own lines are about callers' broken connections.
		ErrorLog: log.New(logWriter{st.cfg.Logger, slog.LevelDebug, "http: "}, "", 0),
	}
	s.mu.Lock()
	err := s.settings().checkListener(ln)
	if err == nil && s.closing {
		err = http.ErrServerClosed
	}
	if err != nil {
		s.mu.Unlock()
		ln.Close()
		return err
	}
	s.servers = append(s.servers, hs)
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	s.log().Info("listening", "address", ln.Addr().Network()+":"+ln.Addr().String())
	return hs.Serve(ln)
}

// checkListener refuses a TCP listener without a client secret, or not on
// loopback unless AllowRemote; and a unix socket every local user can
// connect to while a client admits any caller on it (a Config without
// Clients). Serve and Reload call it.
func (st *settings) checkListener(ln net.Listener) error {
	switch a := ln.Addr().(type) {
	case *net.UnixAddr:
		if !slices.ContainsFunc(st.clients, func(c *client) bool { return c.anyUnix }) {
			return nil
		}
		if mode, open := socket.OpenToAll(a.Name); open {
			return configErr("unix socket %s (%s) lets every local user connect, and without clients (Config.Clients, [[client]] tables) nothing else decides who gets tokens: add clients with users or groups, or narrow the socket (mode 0600, or 0660 with a socket group)", a.Name, mode)
		}
		return nil
	case *net.TCPAddr:
		if !slices.ContainsFunc(st.clients, func(c *client) bool { return c.Secret != "" }) {
			return configErr("TCP listener %s: callers on TCP must authenticate, and no client secret is configured (--client-secret-file)", a)
		}
		if !st.cfg.AllowRemote && !a.IP.IsLoopback() {
			return configErr("TCP listener %s is not on a loopback address; allow it explicitly (--allow-remote)", a)
		}
		return nil
	}
	return configErr("listener on %s %s: only unix and tcp are supported", ln.Addr().Network(), ln.Addr())
}

// Shutdown stops the server gracefully: the listeners close at once,
// requests in flight are answered (waiting for their exchange if they
// must), then background work stops and the signer is closed. If ctx ends
// first, the remaining connections are closed and ctx's error returned.
// Shutdown may be called more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()

	var wg sync.WaitGroup
	errs := make([]error, len(servers))
	for i, hs := range servers {
		wg.Go(func() {
			if errs[i] = hs.Shutdown(ctx); errs[i] != nil {
				hs.Close()
			}
		})
	}
	wg.Wait()
	s.stopBackground()
	done := make(chan struct{})
	go func() {
		s.cache.close()
		s.bg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.closeConn()
	if err == nil {
		err = errors.Join(errs...)
	}
	return err
}

// stopBackground cancels the background work and refuses more.
func (s *Server) stopBackground() {
	s.bgMu.Lock()
	s.cancel()
	s.bgMu.Unlock()
}

// closeConn closes the current signer and marks the server closed.
func (s *Server) closeConn() {
	s.mu.Lock()
	c := s.status().conn
	s.setStateLocked(stateClosed, errShuttingDown.Error())
	s.mu.Unlock()
	if c != nil {
		c.close()
	}
}

// Reload applies a new configuration: it opens the key with the new
// OpenSigner (a new login with the new PIN source) and swaps it in. Cached
// tokens are kept when the keys, clients and environment are unchanged.
//
// When the daemon is ready and the new key cannot be opened, nothing
// changes and the error is returned. When it is not ready, the new
// configuration is adopted even so: a refused PIN is reported again, any
// other failure starts the reconnect loop with the new OpenSigner.
//
// The new Clients and Audit apply to the requests that follow. The new
// configuration must suit the listeners being served, as at Serve, or it
// is refused (ErrConfig). Listeners, MaxConcurrent, MaxConcurrentPerCaller,
// the HTTP timeouts, the Registry and the cache's settings (MaxKeys,
// RefreshMargin, RefreshJitter, RefusalTTL) keep their values from New.
//
// PKCS#11 login state belongs to the process: while the old signer is
// open, the new one's login finds the token logged in, so a PIN changed in
// the PIN source is only checked once the token is opened afresh.
func (s *Server) Reload(cfg Config) error {
	cfg.Registry = s.settings().cfg.Registry
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	st, err := newSettings(cfg, s.metrics)
	if err != nil {
		return err
	}
	if err := s.checkListeners(st); err != nil {
		return err
	}
	c, err := s.open(s.ctx, st)
	s.mu.Lock()
	refused := s.checkListenersLocked(st) // a Serve since
	if refused == nil && s.status().state == stateClosed {
		refused = errShuttingDown
	}
	switch {
	case refused != nil:
		s.mu.Unlock()
		if c != nil {
			c.close()
		}
		return refused
	case err != nil && s.status().state == stateReady:
		s.mu.Unlock()
		return fmt.Errorf("reload: %w (the daemon keeps its current key and configuration)", err)
	case err != nil:
		s.st.Store(st)
		if isPINError(err) {
			s.setStateLocked(stateLoginRefused, loginRefusedReason(err))
		} else {
			s.setStateLocked(stateFault, "the card or HSM is not available ("+err.Error()+"); reconnecting")
			s.startLoopLocked()
		}
		s.mu.Unlock()
		return fmt.Errorf("reload: %w", err)
	}
	s.st.Store(st)
	prev := s.installLocked(c)
	s.mu.Unlock()
	if prev != nil {
		prev.close()
	}
	s.logReady(c, "configuration reloaded; ready")
	return nil
}

func (s *Server) checkListeners(st *settings) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checkListenersLocked(st)
}

// checkListenersLocked checks st against every listener Serve was given:
// what start refuses, Reload refuses.
func (s *Server) checkListenersLocked(st *settings) error {
	for _, ln := range s.lns {
		if err := st.checkListener(ln); err != nil {
			return fmt.Errorf("%w (the daemon keeps its current configuration)", err)
		}
	}
	return nil
}

// logWriter sends a log.Logger's lines to slog, at level with prefix.
type logWriter struct {
	l      *slog.Logger
	level  slog.Level
	prefix string
}

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Log(context.Background(), w.level, w.prefix+strings.TrimRight(string(p), "\r\n"))
	return len(p), nil
}
