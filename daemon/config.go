// Package daemon is mp-hsm's token daemon: one process holds the smart card
// or HSM, logs in once, and serves Maskinporten access tokens to local
// programs over a unix socket or loopback TCP (listeners from package
// daemon/socket). `mp-hsm serve` is a thin command around it.
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
// POST /token takes an OAuth 2 client-credentials form (grant_type, scope,
// and optional resource, consumer_org, pid, system_user_org, altinn=true,
// and authorization_details for a client whose AuthorizationTypes list
// its types) and answers in Maskinporten's shape, expires_in counted down
// to what is left of the cached token; errors are RFC 6749 error objects.
// GET /healthz, /readyz (503 and the reason when not able to sign),
// /metrics and the RFC 8414 metadata answer too.
//
// Each request goes one way, in order: ServeHTTP establishes the caller
// once (a unix socket peer's uid, or a TCP address) and serveToken parses
// the form, authenticates the caller and chooses its client, authorizes
// the request against the client's policy, gets the token from the cache
// or Maskinporten, answers, and writes the audit line (a token's before
// the token is sent). Errors become answers in one table (mapError).
//
// Tokens are cached per request (client, scopes, resources, consumer_org,
// pid, system user, authorization_details, Altinn or not) and refreshed in
// the background before they expire when callers use them. One exchange
// per key runs at a time; exchanges are bounded (MaxConcurrent), and so is
// each caller's share of them and of the cache. A new key, client or
// environment empties the cache.
//
// The daemon imports no PKCS#11: the key comes from OpenSigner, and token
// failures are told apart by package tokenerr. A removed token, broken
// session or device error makes the daemon not ready; it closes the signer
// and calls OpenSigner again (every PresencePoll while the token is away,
// with a backoff after other failures) until it succeeds; cached tokens are
// still served. A request whose signature met the fault is made once more
// after the reconnect. A PIN the token refused is never retried: the
// daemon says so until Reload or a restart.
//
// Callers on a unix socket are admitted by the clients' Users and Groups
// (SO_PEERCRED, SO_PEERGROUPS), or all of them by the one client of a
// Config without Clients; callers on TCP send a client's name and secret
// (HTTP Basic or the form, one method), compared in constant time; failures
// are logged at most once a minute per address and answered ever more
// slowly. Grants, tokens, PINs and secrets are never logged or audited;
// personal identification numbers are masked.
package daemon

import (
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
	// OpenSigner opens the key: on a token it loads the module, logs in and
	// finds the key, as p11.Open (package signer/p11) does. It is called
	// at start, by the reconnect loop after a card or HSM fault (with a
	// backoff), and on Reload. A signer that implements io.Closer is closed
	// when the daemon stops using it; one that implements Prober is probed.
	OpenSigner func(ctx context.Context) (signer.Signer, error)

	// Grant is the template of every client's grant.Config: ClientID,
	// Algorithm, KeyID, Environment, AllowInsecure, HTTPClient. Its Signer,
	// Cache and Logger are the daemon's. An Environment without Issuer is
	// the preset (test or prod) the leaf certificate's issuing CA tells;
	// its AltinnExchange, if set, overrides the preset's.
	Grant grant.Config

	// ClientID, ClientSecret and AllowedScopes describe the one client of a
	// daemon without Clients: it is Client{Name: ClientID (default
	// Grant.ClientID), ClientID: Grant.ClientID, Secret: ClientSecret,
	// Scopes: AllowedScopes}, admitting every caller on a unix socket and
	// callers on TCP that send its name and secret (without ClientSecret,
	// none). With Clients, ClientID and ClientSecret must be empty and
	// AllowedScopes is the default of each client's Scopes. An element of
	// AllowedScopes ending in '*' allows every scope with that prefix; each
	// element may hold several scopes separated by spaces or commas; a list
	// with elements but no scope in them is an error (ErrConfig).
	ClientID      string
	ClientSecret  string
	AllowedScopes []string

	// Clients, if not empty, are the Maskinporten clients the daemon
	// serves, each to the callers it admits (see Client). A caller names
	// one as client_id, or gets the only one it is admitted to.
	Clients []Client

	// Audit, if not nil, receives one line per answered token request (see
	// AuditLog). The caller opens and closes it.
	Audit *AuditLog

	// WaitOnPINRefused, if true, makes New start the Server, not ready,
	// when the token refuses the login at start (tokenerr.IsPINRefused),
	// instead of returning the error: Ready and /readyz then say that the
	// PIN was refused and what to do, and the PIN is not presented again
	// until Reload (or a new process). For a supervisor that restarts a
	// process that exited, such as Kubernetes' kubelet, which would present
	// the PIN again at each restart. If false, the default, New returns the
	// error. Either way a refused PIN is never retried.
	WaitOnPINRefused bool

	// AuditServeOnFailure sends a token whose audit line could not be
	// written all the same. If false, such a request gets 503: no token
	// leaves without its line. Failures are counted and logged either way.
	AuditServeOnFailure bool

	// AllowedResources, if not empty, are the only resource values (RFC
	// 8707) callers may ask for: absolute URIs, a URI's beginning followed
	// by '*', or "*"; separated by spaces or commas. Others get 400
	// invalid_target. A list with elements but no entry is an error.
	AllowedResources []string

	// MaxResourcesPerCaller bounds the distinct resources among the cached
	// requests one caller added (400 invalid_target beyond it), unless
	// AllowedResources names exact URIs only. If zero, 16; negative: none.
	MaxResourcesPerCaller int

	// MaxKeysPerCaller bounds the cached requests one caller added (503
	// beyond it, until its keys are dropped two token lifetimes after their
	// last use). If zero, half of MaxKeys; negative: only MaxKeys.
	MaxKeysPerCaller int

	// AllowedHosts are host names, besides localhost, loopback addresses
	// and the address a connection came to, that TCP callers may send as
	// Host; others get 421, against DNS rebinding. Names only, without case,
	// separated by spaces or commas.
	AllowedHosts []string

	// AllowRemote lets Serve accept TCP listeners that are not loopback.
	AllowRemote bool

	// MaxConcurrent bounds the requests to Maskinporten and Altinn in
	// flight. If zero, 4.
	MaxConcurrent int

	// MaxConcurrentPerCaller is the share of MaxConcurrent one caller's
	// exchanges may hold: at its share a caller waits for one of its own
	// (within ExchangeTimeout), so that its cold requests cannot starve
	// others'. A free slot goes to the waiting caller that holds the
	// fewest, then in turn. If zero, half of MaxConcurrent (at least 1).
	MaxConcurrentPerCaller int

	// MaxKeys bounds the cached requests; when reached, idle keys make room
	// or a new key gets 503. If zero, 20000 (about 35 MiB of tokens).
	MaxKeys int

	// RefreshMargin is how long before expiry a used token is replaced
	// (at most half its lifetime). If zero, 30 s. RefreshJitter moves each
	// refresh earlier by a random time below it (at most a tenth of the
	// lifetime). If zero, 10 s.
	RefreshMargin, RefreshJitter time.Duration

	// ExchangeTimeout bounds one exchange with Maskinporten, retries
	// included. If zero, 30 s. RequestTimeout bounds a caller's wait for a
	// token that is not cached. If zero, ExchangeTimeout + 5 s.
	ExchangeTimeout, RequestTimeout time.Duration

	// RefusalTTL is how long a refusal from Maskinporten (4xx) is answered
	// for its key without asking again. If zero, 5 s; negative: not kept.
	RefusalTTL time.Duration

	// PresencePoll is how often the reconnect loop calls OpenSigner while
	// the token is away (such an open fails before a PIN is read). If zero,
	// 500 ms. ReconnectMin and ReconnectMax bound the doubling backoff after
	// other failures. If zero, 1 s and 30 s.
	PresencePoll, ReconnectMin, ReconnectMax time.Duration

	// ProbeInterval is how often a Prober signer is probed while ready. If
	// zero, 2 s; negative: never.
	ProbeInterval time.Duration

	// ReadTimeout bounds reading a request (headers within half). If zero,
	// 10 s. WriteTimeout bounds a request from its headers to the end of
	// the answer. If zero, RequestTimeout + 5 s. IdleTimeout bounds a
	// kept-alive connection's wait. If zero, 2 minutes.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration

	// Logger receives one line per Maskinporten call, state changes and
	// faults; never a secret. If nil, nothing is logged.
	Logger *slog.Logger

	// Registry receives the metrics and is served on /metrics. If nil, a
	// new one (see Server.Registry). One Registry per Server.
	Registry *prometheus.Registry
}

// Prober is implemented by signers that can tell, without signing, whether
// their token is still there, such as *p11.TokenSigner. An error matching
// a transient kind of tokenerr makes the daemon not ready; it reconnects.
type Prober interface {
	Probe(ctx context.Context) error
}

// ErrConfig is matched by the errors of New and Reload for an invalid
// Config.
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
	if cfg.OpenSigner == nil {
		return cfg, configErr("OpenSigner is required")
	}
	if strings.TrimSpace(cfg.Grant.ClientID) == "" && len(cfg.Clients) == 0 {
		return cfg, configErr("Grant.ClientID (or Clients) is required")
	}
	if cfg.MaxConcurrent < 0 || cfg.MaxKeys < 0 || cfg.MaxConcurrentPerCaller < 0 {
		return cfg, configErr("MaxConcurrent, MaxConcurrentPerCaller and MaxKeys may not be negative")
	}
	for _, l := range []struct {
		field string
		list  []string
		valid func(string) bool
		want  string
	}{
		{"AllowedScopes", cfg.AllowedScopes, validScopeEntry, "a scope, 'prefix*' or '*'"},
		{"AllowedResources", cfg.AllowedResources, validResourceEntry, "an absolute URI, 'URI-prefix*' or '*'"},
		{"AllowedHosts", cfg.AllowedHosts, validHostEntry, "a host name without port or wildcard"},
	} {
		if err := checkList(l.field, l.list, len(l.list) > 0, l.valid, l.want); err != nil {
			return cfg, err
		}
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.MaxConcurrent, 4)
	def(&cfg.MaxConcurrentPerCaller, max(cfg.MaxConcurrent/2, 1))
	if cfg.MaxConcurrentPerCaller > cfg.MaxConcurrent {
		return cfg, configErr("MaxConcurrentPerCaller (%d) is more than MaxConcurrent (%d)", cfg.MaxConcurrentPerCaller, cfg.MaxConcurrent)
	}
	def(&cfg.MaxKeys, 20000)
	def(&cfg.MaxResourcesPerCaller, 16)
	def(&cfg.MaxKeysPerCaller, max(cfg.MaxKeys/2, 1))
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&cfg.RefreshMargin, 30 * time.Second}, {&cfg.RefreshJitter, 10 * time.Second},
		{&cfg.ExchangeTimeout, 30 * time.Second},
		{&cfg.RefusalTTL, 5 * time.Second}, {&cfg.ReconnectMin, time.Second}, {&cfg.ReconnectMax, 30 * time.Second},
		{&cfg.ProbeInterval, 2 * time.Second}, {&cfg.PresencePoll, 500 * time.Millisecond},
		{&cfg.ReadTimeout, 10 * time.Second}, {&cfg.WriteTimeout, 0}, {&cfg.IdleTimeout, 2 * time.Minute},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = cfg.ExchangeTimeout + 5*time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = cfg.RequestTimeout + 5*time.Second
	}
	cfg.ReconnectMax = max(cfg.ReconnectMax, cfg.ReconnectMin)
	if min(cfg.RefreshMargin, cfg.RefreshJitter, cfg.ExchangeTimeout, cfg.RequestTimeout, cfg.ReconnectMin,
		cfg.PresencePoll, cfg.ReadTimeout, cfg.WriteTimeout, cfg.IdleTimeout) < 0 {
		return cfg, configErr("durations may not be negative (except RefusalTTL and ProbeInterval)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// settings are what requests read of a Config, swapped whole by Reload.
type settings struct {
	cfg       Config
	clients   []*client          // the Clients, or the one client of the flat fields
	byName    map[string]*client // by Name
	resources *listPolicy        // AllowedResources
	maxRes    int                // MaxResourcesPerCaller; 0 where AllowedResources bounds them
	hosts     map[string]bool    // AllowedHosts, lower case
}

// newSettings resolves cfg (checked by withDefaults) for requests, each
// client counted in m.
func newSettings(cfg Config, m *metrics) (*settings, error) {
	clients, err := resolveClients(cfg)
	if err != nil {
		return nil, err
	}
	st := &settings{cfg: cfg, clients: clients, byName: map[string]*client{}, hosts: map[string]bool{},
		resources: newListPolicy(cfg.AllowedResources), maxRes: max(cfg.MaxResourcesPerCaller, 0)}
	for _, a := range cfg.AllowedHosts {
		for _, h := range splitList(a) {
			st.hosts[strings.ToLower(strings.TrimSuffix(h, "."))] = true
		}
	}
	for _, c := range clients {
		st.byName[c.Name] = c
		c.m = m.client(c.Name)
	}
	if st.resources.finite() {
		st.maxRes = 0
	}
	return st, nil
}
