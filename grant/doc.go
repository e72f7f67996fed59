// Package grant gets Maskinporten access tokens with the JWT bearer grant
// (RFC 7523), signing with a key on a smart card, an HSM or in a file.
//
// Config.Grant signs a grant with a signer.Signer through its golang-jwt
// SigningMethod;
// Config.Exchange posts one, retrying network errors and 5xx answers with a
// new grant each time; Config.AltinnToken exchanges the token for an Altinn
// one. Most programs want Config.TokenSource (x/oauth2's
// ReuseTokenSourceWithExpiry over Exchange) or Config.Client, which also
// gets a new token once when an API answers 401:
//
//	cfg := &grant.Config{ClientID: clientID, Signer: sig, Environment: grant.Test}
//	client := cfg.Client(ctx, grant.Request{Scopes: []string{"altinn:serviceowner/instances.read"}})
//	resp, err := client.Get("https://api.example.no/resource")
//
// Errors match one of ErrInvalidRequest, ErrInvalidConfig (nothing was
// sent), ErrRefused (4xx), ErrUnavailable (network, timeout or 5xx) and
// ErrBadResponse. Grants, tokens and personal identification numbers are
// never written to errors or logs.
package grant
