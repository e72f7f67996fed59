package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

// Config configures a Server. OpenSigner and Grant.ClientID are required;
// every other zero value is documented. A Config is read by New and Reload
// and not kept for later changes: to change it, call Reload.
type Config struct {
	// OpenSigner opens the key: on a token it loads the module, logs in
	// (with the PIN source it was built with) and finds the key, as
	// p11.Open (package signer/p11) does; a file or KMS key needs less.
	// The daemon calls it at start, after a card or HSM fault (from the
	// reconnect loop, again and again with a backoff), and on Reload. A
	// signer that implements io.Closer is closed when the daemon stops
	// using it. If it implements Prober, its Probe is used to notice a
	// removed token while no one signs; *p11.TokenSigner implements it.
	OpenSigner func(ctx context.Context) (signer.Signer, error)

	// Grant is the template of the Maskinporten client: ClientID (required),
	// Algorithm, KeyID, Environment, AllowInsecure, HTTPClient. Its Signer
	// and Cache are ignored (the daemon sets its own), and its Logger is
	// replaced by Logger. An Environment without Issuer means the preset
	// (test or prod) that the leaf certificate's issuing CA tells; a
	// non-empty AltinnExchange in it still overrides the preset's.
	Grant grant.Config

	// ClientID and ClientSecret are the credentials callers on TCP must
	// present (HTTP Basic, or client_id and client_secret in the form).
	// If ClientID is empty, Grant.ClientID is used. Without ClientSecret,
	// Serve refuses TCP listeners and TCP requests are refused. Callers on
	// a unix socket need no credentials. Both are for a daemon without
	// Clients: it serves one client, Grant.ClientID, to every caller on a
	// unix socket.
	ClientID     string
	ClientSecret string

	// Clients, if not empty, are the Maskinporten clients the daemon
	// serves, each to the callers it admits (see Client); Grant.ClientID
	// is then not used, and ClientID and ClientSecret must be empty. A caller chooses one by
	// name (client_id); naming none, it gets the one it is admitted to if
	// there is exactly one; anything else is refused before anything is
	// signed.
	Clients []Client

	// WaitOnPINRefused, if true, makes New start the Server, not ready,
	// when the token refuses the login at start (tokenerr.IsPINRefused),
	// instead of returning the error: Ready and /readyz then say that the
	// PIN was refused and what to do, and the PIN is not presented again
	// until Reload (or a new process). For a supervisor that restarts a
	// process that exited, such as Kubernetes' kubelet, which would present
	// the PIN again at each restart. If false, the default, New returns the
	// error. Either way a refused PIN is never retried, and nothing about
	// it is written anywhere but the log.
	WaitOnPINRefused bool

	// Audit, if not nil, receives one line per answered token request
	// (see AuditLog). The caller opens and closes it.
	Audit *AuditLog

	// AuditServeOnFailure, if true, sends a token whose audit line could
	// not be written (a full disk) all the same. If false, the default,
	// such a request gets 503 temporarily_unavailable instead: no token
	// leaves the daemon without its audit line. Either way each failure
	// is counted (mphsm_audit_write_failures_total) and logged, at most
	// once a minute.
	AuditServeOnFailure bool

	// AllowedScopes, if not empty, are the only scopes callers may ask
	// for; an element ending in '*' allows every scope with that prefix
	// ("altinn:*"). Each element may hold several scopes separated by
	// spaces or commas. A list with elements but no scope in them (",")
	// is an error (ErrConfig), not "any scope".
	AllowedScopes []string

	// AllowedResources, if not empty, are the only resource values (RFC
	// 8707: the audiences of the token) callers may ask for: absolute
	// URIs, an absolute URI's beginning followed by '*'
	// ("https://api.example.no/*"), or "*" for any. Each element may hold
	// several separated by spaces or commas. A request with a resource
	// outside the list gets 400 invalid_target before anything is signed.
	// A list with elements but no entry in them is an error (ErrConfig).
	AllowedResources []string

	// MaxResourcesPerCaller bounds the distinct resource values among the
	// cached requests one caller added (a caller is a peer uid on a unix
	// socket, a remote address on TCP): a request for a new one beyond it
	// gets 400 invalid_target, and the cache is not filled. It does not
	// apply when AllowedResources names exact URIs only, which bounds them
	// already. If zero, 16; negative means no bound.
	MaxResourcesPerCaller int

	// MaxKeysPerCaller bounds the cached requests (keys) one caller added,
	// so that no caller can fill MaxKeys for the others with distinct
	// scopes, resources, consumer_org or pid values: a request for a new
	// key beyond it gets 503 temporarily_unavailable until some of the
	// caller's keys are dropped (two token lifetimes after their last
	// use). If zero, half of MaxKeys (at least 1); negative means no bound
	// but MaxKeys.
	MaxKeysPerCaller int

	// AllowedHosts are host names, besides localhost, the loopback
	// addresses and the address a connection came to, that TCP callers
	// may send in their Host header, such as the name remote callers use
	// with AllowRemote. A request on TCP with another Host gets 421
	// Misdirected Request, so that a web page cannot read the daemon
	// through a browser by DNS rebinding. Names only (no port, no
	// wildcard), compared without case; each element may hold several
	// separated by spaces or commas. Unix socket requests are not checked.
	AllowedHosts []string

	// AllowRemote lets Serve accept TCP listeners on addresses that are not
	// loopback. If false, only 127.0.0.0/8 and ::1 are served.
	AllowRemote bool

	// MaxConcurrent bounds the requests to Maskinporten (and Altinn) in
	// flight at once. If zero, 4.
	MaxConcurrent int

	// MaxConcurrentPerCaller is the share of the MaxConcurrent slots one
	// caller (a peer uid on a unix socket, a remote address on TCP) may
	// hold at once for the exchanges its requests started: a caller at
	// its share waits for one of its own exchanges to end, within
	// ExchangeTimeout, even while other slots are free, so that its cold
	// requests cannot starve other callers'. A slot that comes free goes
	// to the waiting caller that holds the fewest, then in turn.
	// Background refreshes are bounded by MaxConcurrent alone but wait
	// their turn like a caller. If zero, half of MaxConcurrent (at least
	// 1); at most MaxConcurrent.
	MaxConcurrentPerCaller int

	// MaxKeys bounds the cached keys (distinct requests); when it is
	// reached, keys nobody used for two token lifetimes make room, and
	// otherwise a request for a new key gets 503. If zero, 20000 (about
	// 35 MiB of tokens).
	MaxKeys int

	// RefreshMargin is how long before expiry a used token is replaced
	// (grant.Cache.RefreshMargin). If zero, 30 seconds. It is never more
	// than half of the token's lifetime, nor less than twice the time a
	// token must have left to be served (a tenth of its lifetime, 1 to 10
	// seconds).
	RefreshMargin time.Duration

	// RefreshJitter is the most by which a refresh is moved earlier, at
	// random, so that keys cached together do not refresh together. If
	// zero, 10 seconds; it is never more than a tenth of the lifetime.
	RefreshJitter time.Duration

	// ExchangeTimeout bounds one exchange with Maskinporten, its retries
	// included. If zero, 30 seconds.
	ExchangeTimeout time.Duration

	// RequestTimeout bounds how long a caller waits for a token that is not
	// cached. If zero, ExchangeTimeout plus 5 seconds.
	RequestTimeout time.Duration

	// RefusalTTL is how long a refusal from Maskinporten (4xx) is
	// remembered for its key, so that a caller repeating a bad request does
	// not make Maskinporten requests in a loop. If zero, 5 seconds;
	// negative disables it.
	RefusalTTL time.Duration

	// PresencePoll is how often the reconnect loop after a card or HSM
	// fault calls OpenSigner while the token is away: an open that failed
	// because no token (or no matching token) is there, or with a device
	// error, which OpenSigner reports before it reads a PIN. The first
	// attempt is made after PresencePoll too. If zero, 500 milliseconds.
	PresencePoll time.Duration

	// ReconnectMin and ReconnectMax bound the backoff of the reconnect
	// loop after any other failure to open (a module that does not load):
	// each such failure doubles the wait, from ReconnectMin up to
	// ReconnectMax. If zero, 1 second and 30 seconds.
	ReconnectMin, ReconnectMax time.Duration

	// ProbeInterval is how often the signer is probed for a removed token
	// while ready (see Prober). If zero, 2 seconds; negative disables
	// probing.
	ProbeInterval time.Duration

	// ReadTimeout bounds reading a request, body included; the headers
	// must come within half of it. If zero, 10 seconds.
	ReadTimeout time.Duration

	// WriteTimeout bounds a request from the end of its headers to the end
	// of the answer. If zero, RequestTimeout plus 5 seconds.
	WriteTimeout time.Duration

	// IdleTimeout bounds how long a kept-alive connection waits for the
	// next request. If zero, 2 minutes.
	IdleTimeout time.Duration

	// Logger receives one line per Maskinporten call, state changes and
	// faults. Secrets are never logged. If nil, nothing is logged.
	Logger *slog.Logger

	// Registry receives the daemon's metrics and is served on /metrics. If
	// nil, a new registry is used (see Server.Registry). A Registry can be
	// given to one Server only.
	Registry *prometheus.Registry
}

// Prober is implemented by signers that can tell, without signing, whether
// their token is still there, such as *p11.TokenSigner. Probe returns an
// error matching one of tokenerr's transient kinds (tokenerr.Transient:
// ErrTokenRemoved, ErrSessionClosed, ErrDevice, ...) when it is not; the
// daemon then turns not ready and reconnects.
type Prober interface {
	Probe(ctx context.Context) error
}

// Defaults.
const (
	defaultMaxConcurrent   = 4
	defaultMaxKeys         = 20000
	defaultRefreshMargin   = 30 * time.Second
	defaultRefreshJitter   = 10 * time.Second
	defaultExchangeTimeout = 30 * time.Second
	defaultRefusalTTL      = 5 * time.Second
	defaultReconnectMin    = time.Second
	defaultReconnectMax    = 30 * time.Second
	defaultProbeInterval   = 2 * time.Second
	defaultPresencePoll    = 500 * time.Millisecond
	defaultReadTimeout     = 10 * time.Second
	defaultIdleTimeout     = 2 * time.Minute

	// defaultMaxResourcesPerCaller is generous for a program that calls
	// a few APIs, and stops a caller asking for a new resource each time
	// from filling the cache.
	defaultMaxResourcesPerCaller = 16

	// maxBody bounds a request body.
	maxBody = 64 << 10
	// maxHeaderBytes bounds a request's headers.
	maxHeaderBytes = 16 << 10
)

// ErrConfig is matched by the errors New and Reload return for an invalid
// Config.
var ErrConfig = errors.New("daemon: invalid configuration")

// withDefaults returns cfg with zero values replaced, or an error.
func (cfg Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return cfg, fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if cfg.OpenSigner == nil {
		return bad("OpenSigner is required")
	}
	if strings.TrimSpace(cfg.Grant.ClientID) == "" && len(cfg.Clients) == 0 {
		return bad("Grant.ClientID (or Clients) is required")
	}
	if cfg.ClientID == "" {
		cfg.ClientID = cfg.Grant.ClientID
	}
	if cfg.MaxConcurrent < 0 || cfg.MaxKeys < 0 || cfg.MaxConcurrentPerCaller < 0 {
		return bad("MaxConcurrent, MaxConcurrentPerCaller and MaxKeys may not be negative")
	}
	if err := checkList("AllowedScopes", cfg.AllowedScopes, len(cfg.AllowedScopes) > 0, validScopeEntry, "a scope, 'prefix*' or '*'"); err != nil {
		return cfg, err
	}
	if err := checkList("AllowedResources", cfg.AllowedResources, len(cfg.AllowedResources) > 0, validResourceEntry, "an absolute URI, 'URI-prefix*' or '*'"); err != nil {
		return cfg, err
	}
	if err := checkList("AllowedHosts", cfg.AllowedHosts, len(cfg.AllowedHosts) > 0, validHostEntry, "a host name without port or wildcard"); err != nil {
		return cfg, err
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = defaultMaxConcurrent
	}
	if cfg.MaxConcurrentPerCaller == 0 {
		cfg.MaxConcurrentPerCaller = max(cfg.MaxConcurrent/2, 1)
	}
	if cfg.MaxConcurrentPerCaller > cfg.MaxConcurrent {
		return bad("MaxConcurrentPerCaller (%d) is more than MaxConcurrent (%d)", cfg.MaxConcurrentPerCaller, cfg.MaxConcurrent)
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = defaultMaxKeys
	}
	if cfg.MaxResourcesPerCaller == 0 {
		cfg.MaxResourcesPerCaller = defaultMaxResourcesPerCaller
	}
	if cfg.MaxKeysPerCaller == 0 {
		cfg.MaxKeysPerCaller = max(cfg.MaxKeys/2, 1)
	}
	def(&cfg.RefreshMargin, defaultRefreshMargin)
	def(&cfg.RefreshJitter, defaultRefreshJitter)
	def(&cfg.ExchangeTimeout, defaultExchangeTimeout)
	def(&cfg.RequestTimeout, cfg.ExchangeTimeout+5*time.Second)
	def(&cfg.RefusalTTL, defaultRefusalTTL)
	def(&cfg.ReconnectMin, defaultReconnectMin)
	def(&cfg.ReconnectMax, defaultReconnectMax)
	def(&cfg.ProbeInterval, defaultProbeInterval)
	def(&cfg.PresencePoll, defaultPresencePoll)
	def(&cfg.ReadTimeout, defaultReadTimeout)
	def(&cfg.WriteTimeout, cfg.RequestTimeout+5*time.Second)
	def(&cfg.IdleTimeout, defaultIdleTimeout)
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = cfg.ReconnectMin
	}
	if cfg.RefreshMargin < 0 || cfg.RefreshJitter < 0 || cfg.ExchangeTimeout < 0 || cfg.RequestTimeout < 0 ||
		cfg.ReconnectMin < 0 || cfg.PresencePoll < 0 || cfg.ReadTimeout < 0 || cfg.WriteTimeout < 0 || cfg.IdleTimeout < 0 {
		return bad("durations may not be negative (except RefusalTTL and ProbeInterval)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// settings are the parts of a Config requests read, swapped as a whole by
// Reload.
type settings struct {
	cfg       Config
	clients   []*client          // Clients resolved, or the one implicit client
	byName    map[string]*client // clients by Name
	resources *listPolicy        // AllowedResources
	maxRes    int                // MaxResourcesPerCaller, or 0 where AllowedResources bounds them
	hosts     map[string]bool    // AllowedHosts, lower case
}

// newSettings resolves cfg (checked by withDefaults) for requests,
// counting the clients' requests in m.
func newSettings(cfg Config, m *metrics) (*settings, error) {
	clients, err := resolveClients(cfg)
	if err != nil {
		return nil, err
	}
	st := &settings{cfg: cfg, clients: clients, byName: map[string]*client{}, resources: newListPolicy(cfg.AllowedResources)}
	st.hosts = map[string]bool{}
	for _, a := range cfg.AllowedHosts {
		for _, h := range splitList(a) {
			st.hosts[strings.ToLower(strings.TrimSuffix(h, "."))] = true
		}
	}
	for _, c := range clients {
		st.byName[c.Name] = c
		c.m = m.client(c.Name)
	}
	if st.maxRes = max(cfg.MaxResourcesPerCaller, 0); st.resources.finite() {
		st.maxRes = 0
	}
	return st, nil
}

// anySecret reports whether some client admits callers on TCP.
func (st *settings) anySecret() bool {
	return slices.ContainsFunc(st.clients, func(c *client) bool { return c.Secret != "" })
}
