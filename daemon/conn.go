package daemon

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// conn is one opened signer and the grant configurations that sign with it.
type conn struct {
	raw      signer.Signer
	grant    *grant.Config            // the first client's; its Signer is a meteredSigner
	grants   map[string]*grant.Config // every client's, by client name
	subs     []signer.Signer          // clients' own keys (Client.OpenKey)
	identity identities               // what the cache's tokens depend on
	leaf     *x509.Certificate
}

// close closes the clients' own keys, then the daemon's signer; nil: nothing.
func (c *conn) close() {
	if c != nil {
		closeSigners(append(c.subs, c.raw))
	}
}

// closeSigners closes those of ss that can be closed.
func closeSigners(ss []signer.Signer) {
	for _, s := range ss {
		if c, ok := s.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// probeRequest is signed once per new conn to prove that the key can sign.
var probeRequest = grant.Request{Scopes: []string{"mp-hsm:probe"}}

// newConn builds every client's grant configuration around raw (or the
// client's own key), and signs a test grant with each key.
func (s *Server) newConn(ctx context.Context, raw signer.Signer, st *settings) (*conn, error) {
	tmpl, chain := st.cfg.Grant, raw.Chain()
	c := &conn{raw: raw, grants: map[string]*grant.Config{}, identity: identities{}}
	if len(chain) > 0 {
		c.leaf = chain[0]
	}
	env := tmpl.Environment
	if env.Issuer == "" {
		preset, err := grant.EnvironmentForCertificate(c.leaf) // the one place it is inferred
		if err != nil {
			return nil, fmt.Errorf("%w: no Maskinporten environment given, and the key's certificate does not tell it: %w", ErrConfig, err)
		}
		preset.AltinnExchange = cmp.Or(env.AltinnExchange, preset.AltinnExchange)
		env = preset
	}
	if err := grant.CheckEnvironment(env, chain); err != nil {
		return nil, err
	}
	hc := s.instrumentedClient(tmpl.HTTPClient)
	fail := func(format string, args ...any) (*conn, error) {
		closeSigners(c.subs)
		return nil, fmt.Errorf(format, args...)
	}
	for _, cl := range st.clients {
		key := raw
		if cl.OpenKey != nil {
			sub, err := cl.OpenKey(ctx, raw)
			if err == nil && sub == nil {
				err = errors.New("OpenKey returned no signer and no error")
			}
			if err != nil {
				return fail("client %q: its key: %w", cl.Name, err)
			}
			c.subs = append(c.subs, sub)
			key = sub
			if err := grant.CheckEnvironment(env, sub.Chain()); err != nil {
				return fail("client %q: %w", cl.Name, err)
			}
		}
		gc := tmpl // a copy
		gc.ClientID, gc.KeyID, gc.Environment, gc.Logger, gc.HTTPClient = cl.ClientID, cl.KeyID, env, st.cfg.Logger, hc
		gc.Signer = &meteredSigner{Signer: key, c: c, s: s}
		if _, err := gc.Grant(probeRequest); err != nil {
			return fail("client %q: the key cannot sign a grant: %w", cl.Name, err)
		}
		id, err := identity(&gc, key)
		if err != nil {
			return fail("%w", err)
		}
		c.grants[cl.Name] = &gc
		if c.grant == nil {
			c.grant = &gc
		}
		c.identity[cl.Name] = id
	}
	return c, nil
}

// identities are, by client name, what cached tokens depend on besides the request
// (client id, environment, kid, alg, the key's certificate or thumbprint).
type identities map[string][7]string

var identityParts = [7]string{"the client id", "the environment", "the environment", "the environment", "the kid", "the algorithm", "the key"}

func identity(gc *grant.Config, s signer.Signer) ([7]string, error) {
	key, err := signer.Thumbprint(s.Public())
	if chain := s.Chain(); len(chain) > 0 {
		key, err = "x5c:"+string(chain[0].Raw), nil
	}
	return [7]string{gc.ClientID, gc.Environment.Issuer, gc.Environment.TokenEndpoint,
		gc.Environment.AltinnExchange, gc.KeyID, gc.Algorithm, key}, err
}

// change names what differs from old to ids, for the log.
func (ids identities) change(old identities) string {
	if len(old) != len(ids) {
		return "the clients"
	}
	for _, name := range slices.Sorted(maps.Keys(old)) {
		n, ok := ids[name]
		if !ok {
			return "the clients"
		}
		for j, o := range old[name] {
			if o != n[j] {
				return identityParts[j]
			}
		}
	}
	return "the key"
}

// open calls OpenSigner and builds a conn, counting the attempt.
func (s *Server) open(ctx context.Context, st *settings) (*conn, error) {
	raw, err := st.cfg.OpenSigner(ctx)
	if err == nil && raw == nil {
		err = errors.New("OpenSigner returned no signer and no error")
	}
	var c *conn
	if err == nil {
		if c, err = s.newConn(ctx, raw, st); err != nil {
			closeSigners([]signer.Signer{raw})
		}
	}
	result := map[bool]string{false: "ok", true: "error"}[err != nil]
	if tokenerr.IsPINRefused(err) {
		result = "pin"
	}
	s.metrics.reconnects.WithLabelValues(result).Inc()
	return c, err
}

// installLocked makes c the current conn, emptying the cache when its identities
// differ, and returns the one it replaces.
func (s *Server) installLocked(c *conn) *conn {
	old := s.stat.Load().conn
	s.stat.Store(&status{state: stateReady, conn: c})
	s.lastLeaf.Store(c.leaf)
	if !maps.Equal(s.identity, c.identity) {
		if s.identity != nil {
			n := s.cache.clear()
			s.log().Info(c.identity.change(s.identity)+" changed: cached tokens dropped", "dropped", n)
		}
		s.identity = c.identity
	}
	if old == c {
		return nil
	}
	return old
}

// fault makes the daemon, unless c was replaced, not ready and closes c: after a
// card or HSM fault it reconnects; after a PIN refused while signing (a context
// login) it waits for Reload, as a reconnect would present the PIN again.
func (s *Server) fault(c *conn, err error) {
	s.mu.Lock()
	if s.stat.Load().conn != c || c == nil {
		s.mu.Unlock()
		return
	}
	s.adoptLocked(nil, err)
	s.mu.Unlock()
	if tokenerr.IsPINRefused(err) {
		s.log().Error("the token refused the PIN while signing; it is not presented again: not ready. Fix the PIN source and reload (SIGHUP) or restart", "error", err)
	} else {
		s.metrics.faults.Inc()
		s.log().Warn("card or HSM fault: not ready; reconnecting", "error", err)
	}
	c.close()
}

// reconnectLoop calls OpenSigner until it succeeds, the PIN is refused (never
// retried) or the server stops: every PresencePoll while the token is away, with
// a doubling backoff (ReconnectMin to Max) after other failures.
func (s *Server) reconnectLoop() {
	wait, backoff, lastMsg := s.settings().cfg.PresencePoll, time.Duration(0), ""
	// doneLocked clears s.looping under the lock under which it decides to
	// stop, so that a fault after that starts a new loop.
	doneLocked := func() bool {
		st := s.stat.Load().state
		s.looping = s.ctx.Err() == nil && st != stateReady && st != stateClosed && st != stateLoginRefused
		return !s.looping
	}
	for {
		select {
		case <-s.ctx.Done():
		case <-time.After(wait):
		}
		s.openMu.Lock() // a Reload's login is over, and none starts
		st := s.settings()
		var c, old *conn
		var err error
		s.mu.Lock()
		stopped := doneLocked() // shut down, or a Reload got there first
		if !stopped {
			s.mu.Unlock()
			c, err = s.open(s.ctx, st)
			s.mu.Lock()
			if stopped = doneLocked(); stopped { // while it opened
				old = c
			} else {
				old = s.adoptLocked(c, err)
			}
		}
		refused := doneLocked()
		s.mu.Unlock()
		s.openMu.Unlock()
		old.close()
		switch {
		case stopped:
			return
		case err == nil:
			s.logReady(c, "reconnected: ready")
			return
		case refused:
			s.log().Error("the token refused the login; the PIN is not retried: fix the PIN source and reload (SIGHUP) or restart", "error", err)
			return
		}
		s.openFailures.Add(1)
		// An open that failed before any PIN was read (no token or slot, a
		// device error) is polled for: it spends no login.
		if tokenerr.Transient(err) || errors.Is(err, tokenerr.ErrTokenNotFound) || errors.Is(err, tokenerr.ErrSlotNotFound) {
			wait, backoff = st.cfg.PresencePoll, 0
		} else {
			backoff = min(max(2*backoff, st.cfg.ReconnectMin), st.cfg.ReconnectMax)
			wait = backoff
		}
		if msg := err.Error(); msg != lastMsg {
			s.log().Warn("reconnect failed; trying again", "error", err, "next_in", wait)
			lastMsg = msg
		} else {
			s.log().Debug("reconnect failed; trying again", "error", err)
		}
	}
}

// awaitReconnect reports whether the daemon is ready with a conn newer than old
// within retryWait and ctx, giving up when a reconnect attempt fails.
func (s *Server) awaitReconnect(ctx context.Context, old *conn) bool {
	ctx, cancel := context.WithTimeout(ctx, retryWait)
	defer cancel()
	failures := s.openFailures.Load()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		switch st := s.stat.Load(); {
		case st.state == stateReady && st.conn != old:
			return true
		case st.state == stateLoginRefused || st.state == stateClosed || s.openFailures.Load() != failures:
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

const retryWait = 5 * time.Second

func loginRefusedReason(err error) string {
	return "login refused, not retried (" + err.Error() + "); fix the PIN source and reload (SIGHUP) or restart"
}

// probeLoop probes the signer every ProbeInterval: a token removed while nobody signs.
func (s *Server) probeLoop() {
	for {
		iv := s.settings().cfg.ProbeInterval
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(cmp.Or(max(iv, 0), time.Second)): // probing off: look again for a reload
		}
		c := s.stat.Load().conn
		if c == nil || s.settings().cfg.ProbeInterval < 0 {
			continue
		}
		p, ok := c.raw.(Prober)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		err := p.Probe(ctx)
		cancel()
		if isDeviceFault(err) {
			s.fault(c, err)
		}
	}
}

// logReady logs that the daemon is ready with c, and what c is.
func (s *Server) logReady(c *conn, msg string) {
	attrs := []any{"client_id", c.grant.ClientID, "issuer", c.grant.Environment.Issuer}
	if len(c.grants) > 1 {
		names := slices.Sorted(maps.Keys(c.grants))
		for i, name := range names {
			names[i] += "=" + c.grants[name].ClientID
		}
		attrs[0], attrs[1] = "clients", strings.Join(names, " ")
	}
	if c.leaf != nil {
		attrs = append(attrs, "certificate", c.leaf.Subject.CommonName, "issued_by", c.leaf.Issuer.CommonName,
			"not_after", c.leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if c.grant.KeyID != "" {
		attrs = append(attrs, "kid", c.grant.KeyID)
	}
	s.log().Info(msg, attrs...)
}
