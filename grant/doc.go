// Package grant gets Maskinporten access tokens with the JWT bearer grant
// (RFC 7523), signing with a key on a smart card, an HSM or in a file.
//
// The flow: Config.Grant builds a grant (alg plus x5c or kid in the header;
// aud, iss, iat, exp, jti, scope and the optional claims of Request in the
// body) and signs it with a signer.Signer. Config.Exchange posts it to the
// environment's token endpoint and returns the access token, retrying
// network errors and 5xx answers with a new grant each time. Config.AltinnToken
// exchanges a Maskinporten token for an Altinn platform token.
//
// Most programs want a cached token instead: Config.TokenSource returns an
// oauth2.TokenSource that keeps a token until shortly before it expires and
// makes one request at a time per cache key; Config.Client returns an
// *http.Client that sends it, and gets a new token once when an API answers
// 401. A Cache shared by several Configs holds tokens for many clients, keys
// and requests.
//
// Usage:
//
//	cfg := &grant.Config{ClientID: clientID, Signer: sig, Environment: grant.Test}
//	req := grant.Request{Scopes: []string{"altinn:serviceowner/instances.read"}}
//	client := cfg.Client(ctx, req)
//	resp, err := client.Get("https://api.example.no/resource")
//	// errors.Is(err, grant.ErrRefused) means Maskinporten said no.
//
// Errors match one of ErrInvalidRequest, ErrInvalidConfig (nothing was
// sent), ErrRefused (4xx), ErrUnavailable (network, timeout or 5xx) and
// ErrBadResponse. Grants, tokens and personal identification numbers are
// never written to errors or logs.
//
// # Token cache
//
// One cache, Cache, holds the tokens of every Source and of the token
// daemon, and one rule decides when a cached token is handed out and when
// it is replaced. For a token that lives L (its expires_in) and expires at
// E:
//
//   - It is handed out only while more than its reserve is left: L/10, at
//     least 1 s, at most 10 s and at most L/3 (10 s for a token of 120 s).
//   - It is due for refresh at E - margin, where margin is
//     min(Cache.RefreshMargin, L/2) but at least two reserves, moved earlier
//     by a random jitter below min(Cache.RefreshJitter, L/10). With the
//     defaults (30 s, no jitter) a token of 120 s is due at 90 s, one of
//     40 s halfway, one of 3 s after 1 s.
//   - When it is due, the caller of a Source refreshes it and waits, and
//     other callers wait for the same request. With Cache.Background (the
//     daemon) callers keep getting it, until only its reserve is left, while
//     a refresh runs in the background; a timer starts that refresh at the
//     due time for every key that was asked for during the token's life.
//   - A refresh that fails while the token has more than its reserve left
//     keeps it, and the next try is L/20 later (50 ms to 5 s). With no token
//     to serve, the error goes to every waiting caller; a refusal (4xx) is
//     then remembered for Cache.RefusalTTL (the daemon: 5 s).
//   - A token to exchange for one that expires with it (the Altinn token,
//     Purpose ForExchange) must have half of its lifetime left.
//   - A key whose token expired and that nobody asked for within two
//     lifetimes is dropped. A full cache drops those first, then the least
//     recently used key; the daemon refuses the new key instead.
//
// Why these numbers: the half-lifetime cap keeps a refresh window as long
// as the token has been in use, for retries when Maskinporten fails under
// load, and for the common 120 s token it gives the same 30 s as a
// quarter-lifetime cap would. The reserve means no caller gets a token
// about to expire, and the two-reserve floor means a background refresh
// starts while the old token can still be served. The L/20 backoff is 5 s
// for every token that lives 100 s or more, and scales down for short ones.
package grant
