// Package daemon is mp-hsm's token daemon: one process holds the smart card
// or HSM, logs in once, and serves Maskinporten access tokens to local
// programs over a unix socket or loopback TCP (listeners from daemon/socket).
//
//	srv, err := daemon.New(daemon.Config{
//		OpenSigner: func(context.Context) (signer.Signer, error) { return p11.Open(sigCfg) },
//		Grant:      grant.Config{ClientID: clientID, Environment: grant.Test},
//	})
//	ln, err := socket.Listen("unix:"+socket.DefaultPath(), socket.Options{})
//	go srv.Serve(ln)
//	...
//	srv.Shutdown(ctx) // drains in-flight requests
//
// POST /token takes an OAuth 2 client-credentials form and answers in
// Maskinporten's shape; GET /healthz, /readyz, /metrics and the RFC 8414
// metadata answer too. A request goes one way (docs/ARCHITECTURE.md): caller
// established once, form parsed, caller authenticated, request authorized,
// token from the cache or Maskinporten, answered and audited. Tokens are
// refreshed in the background while used; a card fault makes the daemon
// reconnect while cached tokens are served. A refused PIN is never retried;
// grants, tokens, PINs and secrets are never logged or audited.
package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

// Config configures a Server. OpenSigner and a client (Grant.ClientID, or
// Clients) are required; every other zero value is documented. New and
// Reload read it and keep no reference to it.
type Config struct {
	// OpenSigner opens the key (as p11.Open: one login) at start, on reconnect
	// and on Reload; an io.Closer is closed after use, a Prober probed.
	OpenSigner func(ctx context.Context) (signer.Signer, error)

	// Grant is every client's grant.Config template (Signer and Logger are
	// the daemon's); an Environment without Issuer is the preset the leaf
	// certificate tells, with this AltinnExchange if set.
	Grant grant.Config

	// ClientID, ClientSecret and AllowedScopes are, without Clients, the one
	// Client{Name: ClientID (default Grant.ClientID), ClientID: Grant.ClientID,
	// Secret: ClientSecret, Scopes: AllowedScopes} admitting every unix socket
	// caller. With Clients, ClientID and ClientSecret must be empty and
	// AllowedScopes is each client's default Scopes: separated by spaces or
	// commas, 'prefix*' a prefix; a list with no scope is ErrConfig.
	ClientID      string
	ClientSecret  string
	AllowedScopes []string

	// Clients, if not empty, are the clients served, each to the callers it
	// admits; a caller names one as client_id, or gets the only one it may use.
	Clients []Client

	Audit               *AuditLog // if not nil, one line per answered token request; the caller opens and closes it
	AuditServeOnFailure bool      // serve a token whose audit line could not be written; if false, 503

	// WaitOnPINRefused makes New start not ready, not fail, when the token
	// refuses the login (for supervisors that restart); the PIN is not
	// presented again until Reload.
	WaitOnPINRefused bool

	// AllowedResources, if not empty, are the only resources (RFC 8707)
	// callers may ask for (else 400 invalid_target): absolute URIs,
	// 'URI-prefix*' or "*", separated by spaces or commas.
	AllowedResources []string

	// MaxResourcesPerCaller bounds the distinct resources in one caller's
	// cached requests (400 invalid_target beyond), unless AllowedResources
	// names exact URIs only. If zero, 16; negative: none.
	MaxResourcesPerCaller int

	// MaxKeysPerCaller bounds one caller's cached requests (503 beyond, until
	// unused ones are dropped). If zero, half of MaxKeys; negative: MaxKeys.
	MaxKeysPerCaller int

	// AllowedHosts are names TCP callers may send as Host besides localhost,
	// loopback and the listen address; others get 421 (DNS rebinding).
	AllowedHosts []string

	AllowRemote bool // lets Serve accept TCP listeners that are not loopback

	// MaxConcurrent bounds the exchanges in flight (if zero, 4);
	// MaxConcurrentPerCaller is one caller's share (if zero, half, at least 1).
	MaxConcurrent, MaxConcurrentPerCaller int

	// MaxKeys bounds the cached requests; when reached, idle keys make room
	// or a new key gets 503. If zero, 20000 (about 35 MiB of tokens).
	MaxKeys int

	// RefreshMargin is how long before expiry a used token is replaced (at
	// most half its lifetime), if zero 30 s; RefreshJitter a random advance
	// below it (at most a tenth of the lifetime), if zero 10 s.
	RefreshMargin, RefreshJitter time.Duration

	// ExchangeTimeout bounds one exchange, retries included, if zero 30 s;
	// RequestTimeout a caller's wait for a token, if zero ExchangeTimeout + 5 s.
	ExchangeTimeout, RequestTimeout time.Duration

	// RefusalTTL is how long a refusal from Maskinporten (4xx) is answered
	// for its key without asking again. If zero, 5 s; negative: not kept.
	RefusalTTL time.Duration

	// PresencePoll is how often the reconnect loop calls OpenSigner while
	// the token is away, if zero 500 ms; ReconnectMin and ReconnectMax bound
	// the doubling backoff after other failures, if zero 1 s and 30 s.
	PresencePoll, ReconnectMin, ReconnectMax time.Duration

	ProbeInterval time.Duration // how often a Prober is probed while ready; if zero 2 s, negative never

	// ReadTimeout bounds reading a request (headers within half), if zero
	// 10 s; WriteTimeout the answer, if zero RequestTimeout + 5 s;
	// IdleTimeout a kept-alive connection's wait, if zero 2 minutes.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration

	Logger   *slog.Logger         // Maskinporten calls, state changes and faults, never a secret; if nil, none
	Registry *prometheus.Registry // one per Server, for the metrics on /metrics; if nil, the Server's own
}

// Prober is a signer that can tell, without signing, whether its token is
// still there (*p11.TokenSigner); a transient error makes the daemon reconnect.
type Prober interface {
	Probe(ctx context.Context) error
}

// ErrConfig is matched by New's and Reload's errors for an invalid Config.
var ErrConfig = errors.New("daemon: invalid configuration")

const (
	maxBody        = 64 << 10 // bytes of a request body
	maxHeaderBytes = 16 << 10
)

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// withDefaults returns cfg with its zero values replaced, or an error.
func (cfg Config) withDefaults() (Config, error) {
	switch {
	case cfg.OpenSigner == nil:
		return cfg, configErr("OpenSigner is required")
	case strings.TrimSpace(cfg.Grant.ClientID) == "" && len(cfg.Clients) == 0:
		return cfg, configErr("Grant.ClientID (or Clients) is required")
	case min(cfg.MaxConcurrent, cfg.MaxKeys, cfg.MaxConcurrentPerCaller) < 0:
		return cfg, configErr("MaxConcurrent, MaxConcurrentPerCaller and MaxKeys may not be negative")
	}
	if err := cmp.Or(
		checkList("AllowedScopes", cfg.AllowedScopes, len(cfg.AllowedScopes) > 0, validScopeEntry, "a scope, 'prefix*' or '*'"),
		checkList("AllowedResources", cfg.AllowedResources, len(cfg.AllowedResources) > 0, validResourceEntry, "an absolute URI, 'URI-prefix*' or '*'"),
		checkList("AllowedHosts", cfg.AllowedHosts, len(cfg.AllowedHosts) > 0, validHostEntry, "a host name without port or wildcard"),
	); err != nil {
		return cfg, err
	}
	cfg.MaxConcurrent = cmp.Or(cfg.MaxConcurrent, 4)
	cfg.MaxConcurrentPerCaller = cmp.Or(cfg.MaxConcurrentPerCaller, max(cfg.MaxConcurrent/2, 1))
	if cfg.MaxConcurrentPerCaller > cfg.MaxConcurrent {
		return cfg, configErr("MaxConcurrentPerCaller (%d) is more than MaxConcurrent (%d)", cfg.MaxConcurrentPerCaller, cfg.MaxConcurrent)
	}
	cfg.MaxKeys = cmp.Or(cfg.MaxKeys, 20000)
	cfg.MaxResourcesPerCaller = cmp.Or(cfg.MaxResourcesPerCaller, 16)
	cfg.MaxKeysPerCaller = cmp.Or(cfg.MaxKeysPerCaller, max(cfg.MaxKeys/2, 1))
	cfg.RefreshMargin, cfg.RefreshJitter = cmp.Or(cfg.RefreshMargin, 30*time.Second), cmp.Or(cfg.RefreshJitter, 10*time.Second)
	cfg.ExchangeTimeout = cmp.Or(cfg.ExchangeTimeout, 30*time.Second)
	cfg.RequestTimeout = cmp.Or(cfg.RequestTimeout, cfg.ExchangeTimeout+5*time.Second)
	cfg.RefusalTTL, cfg.ProbeInterval = cmp.Or(cfg.RefusalTTL, 5*time.Second), cmp.Or(cfg.ProbeInterval, 2*time.Second)
	cfg.ReconnectMin, cfg.PresencePoll = cmp.Or(cfg.ReconnectMin, time.Second), cmp.Or(cfg.PresencePoll, 500*time.Millisecond)
	cfg.ReconnectMax = max(cmp.Or(cfg.ReconnectMax, 30*time.Second), cfg.ReconnectMin)
	cfg.ReadTimeout, cfg.IdleTimeout = cmp.Or(cfg.ReadTimeout, 10*time.Second), cmp.Or(cfg.IdleTimeout, 2*time.Minute)
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, cfg.RequestTimeout+5*time.Second)
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	cfg.Registry = cmp.Or(cfg.Registry, prometheus.NewRegistry())
	if min(cfg.RefreshMargin, cfg.RefreshJitter, cfg.ExchangeTimeout, cfg.RequestTimeout, cfg.ReconnectMin,
		cfg.PresencePoll, cfg.ReadTimeout, cfg.WriteTimeout, cfg.IdleTimeout) < 0 {
		return cfg, configErr("durations may not be negative (except RefusalTTL and ProbeInterval)")
	}
	return cfg, nil
}

// settings are what requests read of a Config, swapped whole by Reload.
type settings struct {
	cfg       Config
	clients   []*client       // the Clients, or the one client of the flat fields
	resources *listPolicy     // AllowedResources
	maxRes    int             // MaxResourcesPerCaller; 0 where AllowedResources bounds them
	hosts     map[string]bool // AllowedHosts, lower case
}

// newSettings resolves cfg (checked by withDefaults) for requests.
func newSettings(cfg Config, m *metrics) (*settings, error) {
	clients, err := resolveClients(cfg)
	if err != nil {
		return nil, err
	}
	st := &settings{cfg: cfg, clients: clients, hosts: map[string]bool{}, resources: newListPolicy(cfg.AllowedResources)}
	if p := st.resources; p.any || len(p.prefixes) > 0 {
		st.maxRes = max(cfg.MaxResourcesPerCaller, 0)
	}
	for _, a := range cfg.AllowedHosts {
		for _, h := range splitList(a) {
			st.hosts[strings.ToLower(strings.TrimSuffix(h, "."))] = true
		}
	}
	for _, c := range clients {
		c.m = m.client(c.Name)
	}
	return st, nil
}
