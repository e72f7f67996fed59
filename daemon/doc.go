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
