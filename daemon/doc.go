// Package daemon is mp-hsm's token daemon: one process holds the smart card
// or HSM, logs in once, and serves Maskinporten access tokens to every local
// program over a unix socket or loopback TCP. `mp-hsm serve` is a thin
// command around it.
//
// The daemon is a drop-in token URL for any OAuth 2 client library: POST
// /token takes a client-credentials form (grant_type=client_credentials,
// scope, and optional resource, consumer_org, pid, system_user_org,
// altinn=true, and authorization_details (RFC 9396) for a client whose
// Client.AuthorizationTypes list its types) and answers in Maskinporten's token-response shape, with
// expires_in counted down to what is left of the cached token. Errors are
// OAuth 2 error objects (RFC 6749 section 5.2).
//
// # Usage
//
//	srv, err := daemon.New(daemon.Config{
//		OpenSigner: func(context.Context) (signer.Signer, error) { return p11.Open(sigCfg) },
//		Grant:      grant.Config{ClientID: clientID, Environment: grant.Test},
//	})
//	ln, err := daemon.Listen("unix:"+daemon.DefaultSocketPath(), daemon.ListenOptions{})
//	go srv.Serve(ln)
//	...
//	srv.Shutdown(ctx) // drains in-flight requests
//
// The daemon imports no PKCS#11 and needs no cgo: the key comes from
// OpenSigner (p11.Open of package signer/p11 for a card or HSM, which does
// need cgo; signer.FromPKCS12File or signer.NewFileSigner for a file or
// KMS key), and token failures are told apart by the kinds of package
// tokenerr.
//
// # Tokens
//
// Tokens are cached per request (scope set, resources, consumer_org, pid,
// system user, Altinn or not) for the key in use, in a grant.Cache: the
// same cache and refresh rule as grant.Config.TokenSource (see the grant
// package's "Token cache"), with its Background and RefuseWhenFull options.
// A new key (another certificate, kid, client or environment) empties the
// cache. One exchange per cache key is in flight at a time: concurrent
// callers of a cold key wait for it. The exchanges with Maskinporten are
// bounded (Config.MaxConcurrent), and so is each caller's share of them
// (MaxConcurrentPerCaller). Tokens that callers use are
// refreshed in the background before they expire, at a jittered time, so
// that many keys do not refresh in the same second; keys nobody asked for
// within two token lifetimes are dropped.
//
// # Card and HSM faults
//
// When signing fails because the token was removed, the session broke or the
// device failed (tokenerr.ErrTokenRemoved, ErrSessionClosed, ErrDevice, ...), or
// a periodic probe sees so (Prober: every 2 s by default; p11.TokenSigner
// asks the slot and the login session, not cached token information), the
// daemon turns not ready (/readyz answers 503), closes the signer, and calls
// Config.OpenSigner again every PresencePoll while the token is away (such
// an open fails before it reads a PIN), with a growing backoff after other
// failures, until it succeeds: no restart is needed. A request whose
// signature met the fault waits for that reconnect and is made once more
// (a new grant: the failed one was never sent); it gets 503 if the next
// attempt fails. Cached tokens are still served meanwhile; other requests
// the cache cannot answer get 503 temporarily_unavailable with the reason. A PIN the token refused
// (tokenerr.ErrPINIncorrect, ErrPINLocked, ErrPINFinalTry, ...) stops the loop:
// a PIN is never retried, and the daemon says so until Reload or a restart.
//
// # Endpoints
//
//	POST /token     OAuth 2 client credentials -> access token
//	GET  /healthz   200 while the process runs
//	GET  /readyz    200 when logged in and able to sign, else 503 and the reason
//	GET  /metrics   Prometheus metrics from Config.Registry
//	GET  /.well-known/oauth-authorization-server, /.well-known/openid-configuration
//	                RFC 8414 metadata: issuer and token_endpoint from the request's Host
//
// Callers on a unix socket are trusted (the socket's mode and group decide
// who may connect). Callers on TCP must authenticate with HTTP Basic (or
// client_id and client_secret in the form) with Config.ClientID and
// Config.ClientSecret, compared in constant time (Basic credentials both
// form-decoded and raw); one method only; failures are logged at
// most once a minute per address, counted, and answered ever more slowly
// to an address that keeps failing.
//
// Grants, tokens, PINs and client secrets are never logged; personal
// identification numbers are masked.
//
// # Clients
//
// With Config.Clients one daemon serves several Maskinporten clients from
// the one logged-in key (or, per client, another key found through it:
// Client.OpenKey), each to the callers it admits: on a unix socket by the
// peer's uid and groups (SO_PEERCRED, and the supplementary groups from
// /proc), on TCP by the client's name and secret. A caller names a client
// as client_id, or gets the only one it is admitted to; any other request
// is refused with an OAuth 2 error that says why, before anything is
// signed. Each client has its own scope policy and cache keys. Without
// Clients the daemon serves Grant.ClientID to every caller on the socket.
// Config.Audit (an AuditLog) receives one JSON line per answered token
// request: the peer, the client, what was asked for and the outcome,
// never a token or secret.
//
// # Callers
//
// A caller is the peer's uid on a unix socket (SO_PEERCRED) and the remote
// address on TCP. No caller can starve the others: it holds at most
// MaxConcurrentPerCaller of the exchanges in flight, and has at most
// MaxKeysPerCaller requests and MaxResourcesPerCaller distinct resources
// in the cache (AllowedResources may limit the resources for everyone).
package daemon
