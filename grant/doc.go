// Package grant gets Maskinporten access tokens with the JWT bearer grant
// (RFC 7523), signing with a key on a smart card, an HSM or in a file.
//
// Config.Grant builds a grant (alg and x5c or kid in the header, the claims
// of Request in the body) and signs it with a signer.Signer through
// golang-jwt; Config.Exchange posts one to the token endpoint, retrying
// network errors and 5xx answers with a new grant each time;
// Config.AltinnToken exchanges a Maskinporten token for an Altinn one. Most
// programs want Config.TokenSource (x/oauth2's ReuseTokenSourceWithExpiry
// over Exchange) or Config.Client, which also gets a new token once when an
// API answers 401:
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
package grant
