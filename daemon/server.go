package daemon

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mp-hsm/mp-hsm/grant"
)

// Server is the token daemon. Make one with New, give it listeners with
// Serve, and stop it with Shutdown. It is an http.Handler too. All methods
// are safe for concurrent use.
type Server struct {
	st       atomic.Pointer[settings]
	reg      *prometheus.Registry
	metrics  *metrics
	adm      *admission // the MaxConcurrent slots for exchanges
	cache    *grant.Cache
	quotas   quotas        // per-caller bounds on the cache
	authFail *authFailures // failed authentication on TCP, per address
	refusals *refusalLog   // refusals of callers no client admits, summarized for the audit log
	metricsH http.Handler

	ctx    context.Context // ends when the server has stopped serving
	cancel context.CancelFunc

	// bgMu orders bg.Add against stopBackground's cancel: no background
	// work starts once ctx has ended and Shutdown waits for bg.
	bgMu sync.Mutex
	bg   sync.WaitGroup

	mu      sync.Mutex
	looping bool // the reconnect loop runs
	// openFailures counts the reconnect loop's failed attempts, so that a
	// request waiting for the reconnect (awaitReconnect) sees one fail.
	openFailures atomic.Int64
	identity     string // the identity of the cached tokens' key
	servers      []*http.Server
	lns          []net.Listener // what Serve was given: Reload checks them against the new settings
	closing      bool           // Shutdown has begun: listeners drain; ctx ends later

	// stat is the daemon's state, its reason and its signer as one
	// value: replaced under mu, read without it (requests, /readyz).
	stat     atomic.Pointer[status]
	lastLeaf atomic.Pointer[x509.Certificate] // the last key's certificate
}

type state int

const (
	stateStarting     state = iota
	stateReady              // logged in and able to sign
	stateFault              // the card or HSM failed; reconnecting
	stateLoginRefused       // the PIN was refused; waiting for Reload
	stateClosed             // Shutdown was called
)

// status is one state of the daemon. It is never changed: a new one
// replaces it.
type status struct {
	state  state
	reason string // why it is not ready; "" when ready
	conn   *conn  // the signer; set exactly when ready
}

// New checks cfg, opens the key with cfg.OpenSigner (one login) and returns
// a Server that is ready to Serve.
//
// If the token is absent or the device fails at start (an error
// tokenerr.Transient reports, such as ErrNoToken, ErrTokenRemoved or
// ErrDevice), New still returns a Server: not ready, reconnecting in the
// background until the token is there. So does a refused PIN with
// cfg.WaitOnPINRefused, but without reconnecting: it waits for Reload. Any
// other error, such as a refused PIN, a key that is not found or
// an invalid Config (ErrConfig), is returned and nothing keeps running.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{reg: reg, cache: newCache(cfg), authFail: newAuthFailures(), refusals: newRefusalLog()}
	s.metrics = newMetrics(s) // registered on reg below, once New succeeds
	st, err := newSettings(cfg, s.metrics)
	if err != nil {
		return nil, err
	}
	s.st.Store(st)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.stat.Store(&status{state: stateStarting, reason: "starting"})
	s.adm = newAdmission(cfg.MaxConcurrent, cfg.MaxConcurrentPerCaller, s.metrics)
	s.metricsH = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{cfg.Logger}})

	c, err := s.open(s.ctx, s.settings())
	s.mu.Lock()
	switch {
	case err == nil:
		s.installLocked(c)
	case isTransientAtStart(err):
		s.setStateLocked(stateFault, "the card or HSM is not available ("+err.Error()+"); waiting for it")
		s.startLoopLocked()
	case isPINError(err) && cfg.WaitOnPINRefused:
		// Not ready, and no reconnect loop: nothing presents the PIN
		// again but Reload.
		s.setStateLocked(stateLoginRefused, loginRefusedReason(err))
	default:
		s.mu.Unlock()
		s.cancel()
		return nil, err
	}
	s.mu.Unlock()
	switch {
	case isPINError(err):
		cfg.Logger.Error("the token refused the login; the PIN is not retried: starting not ready. Fix the PIN source and reload (SIGHUP) or restart", "error", err)
	case err != nil:
		cfg.Logger.Warn("the card or HSM is not available; starting not ready and waiting for it", "error", err)
	default:
		s.logReady(c, "logged in: ready")
	}
	if err := s.register(reg); err != nil {
		s.stopBackground()
		s.closeConn()
		return nil, fmt.Errorf("%w: Registry: %w", ErrConfig, err)
	}
	s.goBackground(s.probeLoop)
	return s, nil
}

// register moves the metrics onto reg.
func (s *Server) register(reg prometheus.Registerer) error {
	m := s.metrics
	for _, c := range []prometheus.Collector{m.requests, m.cacheHits, m.cacheMisses, m.upstream, m.upstreamTime,
		m.refreshes, m.signSeconds, m.signErrors, m.reconnects, m.faults, m.inflight, m.queued, m.authFailures, m.auditFailures, m.ready, m.storeSize, m.certExpiry,
		m.clientRequests, m.clientRefusals} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Registry returns the registry the metrics are in and /metrics serves:
// Config.Registry, or the Server's own.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

func (s *Server) settings() *settings { return s.st.Load() }

func (s *Server) log() *slog.Logger { return s.settings().cfg.Logger }

func (s *Server) now() time.Time { return time.Now() }

// leaf returns the certificate of the key in use, or of the last one.
func (s *Server) leaf() *x509.Certificate { return s.lastLeaf.Load() }

// goBackground runs f in a goroutine that Shutdown waits for; false if the
// server is stopping.
func (s *Server) goBackground(f func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f()
	}()
	return true
}

// status returns the daemon's current state.
func (s *Server) status() *status { return s.stat.Load() }

// setStateLocked makes the daemon not ready, in state st (not stateReady:
// see installLocked), for reason; it holds no signer then. s.mu must be
// held.
func (s *Server) setStateLocked(st state, reason string) {
	s.stat.Store(&status{state: st, reason: reason})
}

// Ready reports whether the daemon is logged in and able to sign, and if
// not, why. An expired certificate makes it not ready.
func (s *Server) Ready() (bool, string) {
	if st := s.status(); st.state != stateReady {
		return false, st.reason
	}
	if leaf := s.leaf(); leaf != nil && s.now().After(leaf.NotAfter) {
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

// Serve answers requests on ln until Shutdown; it returns
// http.ErrServerClosed then, like http.Server.Serve. A TCP listener is
// refused (and closed) without Config.ClientSecret, and on an address that
// is not loopback unless Config.AllowRemote; a unix socket that every
// local user may connect to (write permission for others, or an abstract
// socket) is refused without Clients, which would serve them all. Reload
// checks its configuration against the same listeners.
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
		ErrorLog:          log.New(slogWriter{st.cfg.Logger}, "", 0),
	}
	s.mu.Lock()
	if err := s.settings().checkListener(ln); err != nil {
		s.mu.Unlock()
		ln.Close()
		return err
	}
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.servers = append(s.servers, hs)
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	s.log().Info("listening", "address", ln.Addr().Network()+":"+ln.Addr().String())
	return hs.Serve(ln)
}

// Shutdown stops the server gracefully: the listeners close at once,
// requests in flight are answered (waiting, if they must, for their
// exchange), then background refreshes and the reconnect loop stop and the
// signer is closed. If ctx ends first, the remaining connections are closed
// and ctx's error is returned. Shutdown may be called more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()

	var wg sync.WaitGroup
	errs := make([]error, len(servers))
	for i, hs := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Shutdown(ctx); err != nil {
				hs.Close()
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	s.stopBackground()
	done := make(chan struct{})
	go func() {
		s.cache.Close()
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
	s.setStateLocked(stateClosed, "the daemon is shutting down")
	s.mu.Unlock()
	if c != nil {
		c.close()
	}
}

// Reload applies a new configuration: it opens the key with the new
// OpenSigner (a new login with the new PIN source) and swaps it in. Cached
// tokens are kept when the key, the client and the environment are
// unchanged, and dropped otherwise.
//
// When the daemon is ready and the new key cannot be opened, nothing
// changes and the error is returned. When it is not ready (the card is
// away, or a PIN was refused), the new configuration is adopted even if
// the key cannot be opened yet: a refused PIN is reported again, any other
// failure starts the reconnect loop with the new OpenSigner.
//
// The new Clients (admission, scopes, keys) and Audit apply to the
// requests that follow; a client added, removed or changed empties the
// cache, as a new key does.
//
// The new configuration must suit the listeners being served, as at
// Serve: a unix socket that every local user can connect to needs Clients
// that decide who is served, and a TCP listener needs a secret. One that
// does not is refused (ErrConfig) and the current one kept.
//
// Listeners, MaxConcurrent, MaxConcurrentPerCaller, the HTTP timeouts, the Registry and the token
// cache's settings (MaxKeys, RefreshMargin, RefreshJitter, RefusalTTL) keep
// their values from New.
//
// PKCS#11 login state belongs to the process: while the old signer is
// still open, the new one's login finds the token logged in, so a PIN
// changed in the PIN source is only checked once the token is opened
// afresh (after a fault or a restart).
func (s *Server) Reload(cfg Config) error {
	old := s.settings().cfg
	cfg.Registry = old.Registry
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	st, err := newSettings(cfg, s.metrics)
	if err != nil {
		return err
	}
	s.mu.Lock()
	err = s.checkListenersLocked(st)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	c, err := s.open(s.ctx, st)
	s.mu.Lock()
	if err := s.checkListenersLocked(st); err != nil { // a Serve since
		s.mu.Unlock()
		if c != nil {
			c.close()
		}
		return err
	}
	if s.status().state == stateClosed {
		s.mu.Unlock()
		if c != nil {
			c.close()
		}
		return errShuttingDown
	}
	if err != nil {
		if s.status().state == stateReady {
			s.mu.Unlock()
			return fmt.Errorf("reload: %w (the daemon keeps its current key and configuration)", err)
		}
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

// checkListenersLocked checks st against every listener Serve was given,
// as Serve checked the settings it started with: what start refuses,
// Reload refuses.
func (s *Server) checkListenersLocked(st *settings) error {
	for _, ln := range s.lns {
		if err := st.checkListener(ln); err != nil {
			return fmt.Errorf("%w (the daemon keeps its current configuration)", err)
		}
	}
	return nil
}

var errShuttingDown = errors.New("the daemon is shutting down")

// slogWriter sends net/http's error log lines to slog at debug level
// (they are about callers' broken connections, not about the daemon).
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("http: " + string(trimNewline(p)))
	return len(p), nil
}

type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.l.Error("metrics: " + fmt.Sprint(v...)) }

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
