package daemon

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mp-hsm/mp-hsm/daemon/socket"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// Server is the token daemon: New, Serve, Shutdown; an http.Handler too.
// All methods are safe for concurrent use.
type Server struct {
	st       atomic.Pointer[settings]
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

	// openMu is held from each OpenSigner call (a login) to adopting its
	// result, so that a Reload and the reconnect loop never present a PIN at
	// once: two wrong tries where one tells.
	openMu sync.Mutex

	mu           sync.Mutex
	looping      bool         // the reconnect loop runs
	openFailures atomic.Int64 // the reconnect loop's failed attempts (awaitReconnect)
	identity     identities   // of the cached tokens' keys
	servers      []*http.Server
	lns          []net.Listener // what Serve was given: Reload checks them
	closing      bool           // Shutdown has begun

	stat     atomic.Pointer[status] // replaced under mu, read without it
	lastLeaf atomic.Pointer[x509.Certificate]
}

const (
	stateStarting     = iota
	stateReady        // logged in and able to sign
	stateFault        // the card or HSM failed; reconnecting
	stateLoginRefused // the PIN was refused; waiting for Reload
	stateClosed       // Shutdown was called
)

// status is one state of the daemon, never changed: a new one replaces it.
type status struct {
	state  int
	reason string // why it is not ready
	conn   *conn  // the signer; set exactly when ready
}

// New checks cfg and opens the key with cfg.OpenSigner (one login). If the
// token is absent or the device fails (tokenerr.Transient), the Server
// starts not ready and reconnects; with WaitOnPINRefused, a refused PIN
// starts it not ready until Reload. Other errors (ErrConfig) are returned.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{refusals: newTallies(), authFail: authFailures{newTallies(), sleepCtx}, quotas: quotas{callers: map[callerID]held{}}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.cache = &cache{cfg: cfg, entries: map[string]*entry{}, ctx: s.ctx, spawn: s.goBackground}
	s.metrics = newMetrics(s)
	st, err := newSettings(cfg, s.metrics)
	if err != nil {
		s.cancel()
		return nil, err
	}
	s.st.Store(st)
	s.stat.Store(&status{state: stateStarting, reason: "starting"})
	s.adm = newAdmission(cfg.MaxConcurrent, cfg.MaxConcurrentPerCaller, s.metrics)
	s.metricsH = promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{ErrorLog: logLogger(cfg.Logger, slog.LevelError, "metrics: ")})

	c, err := s.open(s.ctx, st)
	if err != nil && !tokenerr.Transient(err) && !(tokenerr.IsPINRefused(err) && cfg.WaitOnPINRefused) {
		s.cancel()
		return nil, err
	}
	s.mu.Lock()
	s.adoptLocked(c, err)
	s.mu.Unlock()
	switch {
	case tokenerr.IsPINRefused(err):
		cfg.Logger.Error("the token refused the login; the PIN is not retried: starting not ready. Fix the PIN source and reload (SIGHUP) or restart", "error", err)
	case err != nil:
		cfg.Logger.Warn("the card or HSM is not available; starting not ready and waiting for it", "error", err)
	default:
		s.logReady(c, "logged in: ready")
	}
	for _, col := range s.metrics.all {
		if err := cfg.Registry.Register(col); err != nil {
			s.stopBackground()
			s.closeConn()
			return nil, fmt.Errorf("%w: Registry: %w", ErrConfig, err)
		}
	}
	s.goBackground(s.probeLoop)
	return s, nil
}

func (s *Server) settings() *settings { return s.st.Load() }

func (s *Server) log() *slog.Logger { return s.settings().cfg.Logger }

// adoptLocked makes the daemon ready with c and returns the conn it replaces, to
// close outside s.mu; or records err: a refused PIN waits for Reload, else reconnect.
func (s *Server) adoptLocked(c *conn, err error) *conn {
	switch {
	case err == nil:
		return s.installLocked(c)
	case tokenerr.IsPINRefused(err):
		s.stat.Store(&status{state: stateLoginRefused, reason: loginRefusedReason(err)})
	default:
		s.stat.Store(&status{state: stateFault, reason: "the card or HSM is not available (" + err.Error() + "); reconnecting"})
		if !s.looping && s.goBackground(s.reconnectLoop) {
			s.looping = true
		}
	}
	return nil
}

// goBackground runs f in a goroutine that Shutdown waits for, unless stopping.
func (s *Server) goBackground(f func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.bg.Go(f)
	return true
}

// Ready reports whether the daemon is logged in and able to sign (and its
// certificate not expired), and if not, why.
func (s *Server) Ready() (bool, string) {
	if st := s.stat.Load(); st.state != stateReady {
		return false, st.reason
	}
	if leaf := s.lastLeaf.Load(); leaf != nil && time.Now().After(leaf.NotAfter) {
		return false, fmt.Sprintf("the certificate %q expired at %s; renew it", leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return true, ""
}

// Serve answers on ln until Shutdown (http.ErrServerClosed); it refuses and
// closes a listener that would serve more callers than configured.
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
		ErrorLog: logLogger(st.cfg.Logger, slog.LevelDebug, "http: "),
	}
	s.mu.Lock()
	err := s.settings().checkListener(ln)
	if err == nil && s.closing {
		err = http.ErrServerClosed
	} else if err == nil {
		s.servers, s.lns = append(s.servers, hs), append(s.lns, ln)
	}
	s.mu.Unlock()
	if err != nil {
		ln.Close()
		return err
	}
	s.log().Info("listening", "address", ln.Addr().Network()+":"+ln.Addr().String())
	return hs.Serve(ln)
}

// checkListener refuses, for Serve and Reload alike, a TCP listener
// without a client secret or, unless AllowRemote, not on loopback; and a
// unix socket open to every local user while a client admits every peer.
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

// Shutdown closes the listeners, answers the requests in flight, then
// stops background work and closes the signer; if ctx ends first, it closes
// the remaining connections and returns ctx's error. It may be called again.
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
		s.cache.clear()
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
	return cmp.Or(err, errors.Join(errs...))
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
	c := s.stat.Load().conn
	s.stat.Store(&status{state: stateClosed, reason: errShuttingDown.Error()})
	s.mu.Unlock()
	c.close()
}

// Reload opens the key with cfg's OpenSigner (a new login) and swaps both
// in, keeping cached tokens if keys, clients and environment are the same.
// If the daemon is ready and the key cannot be opened, nothing changes; if
// it is not ready, cfg is adopted even so. A cfg that does not suit the
// listeners served is refused (ErrConfig). Listeners, MaxConcurrent(PerCaller),
// the HTTP timeouts, the Registry and the cache's settings stay New's.
// PKCS#11 login state belongs to the process: while the old signer is open,
// the new login finds the token logged in, so a changed PIN is only checked
// once the token is opened afresh.
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
	s.mu.Lock()
	err = s.checkListenersLocked(st)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.openMu.Lock()
	defer s.openMu.Unlock()
	c, err := s.open(s.ctx, st)
	s.mu.Lock()
	refused := s.checkListenersLocked(st) // a Serve since
	if refused == nil && s.stat.Load().state == stateClosed {
		refused = errShuttingDown
	}
	switch {
	case refused != nil:
		s.mu.Unlock()
		c.close()
		return refused
	case err != nil && s.stat.Load().state == stateReady:
		s.mu.Unlock()
		return fmt.Errorf("reload: %w (the daemon keeps its current key and configuration)", err)
	}
	s.st.Store(st)
	prev := s.adoptLocked(c, err)
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	prev.close()
	s.logReady(c, "configuration reloaded; ready")
	return nil
}

// checkListenersLocked checks st against every listener Serve was given.
func (s *Server) checkListenersLocked(st *settings) error {
	for _, ln := range s.lns {
		if err := st.checkListener(ln); err != nil {
			return fmt.Errorf("%w (the daemon keeps its current configuration)", err)
		}
	}
	return nil
}

// logLogger sends a log.Logger's lines to l at level, with prefix.
func logLogger(l *slog.Logger, level slog.Level, prefix string) *log.Logger {
	ll := slog.NewLogLogger(l.Handler(), level)
	ll.SetPrefix(prefix)
	return ll
}
