// Package grant gets Maskinporten access tokens with the JWT bearer grant
// (RFC 7523), signing with a key on a smart card, an HSM or in a file.
//
// The flow: Config.Grant builds a grant (alg plus x5c or kid in the header;
// aud, iss, iat, exp, jti, scope and the optional claims of Request in the
// body) and signs it with a signer.Signer through golang-jwt.
// Config.Exchange posts it to the environment's token endpoint and returns
// the access token, retrying network errors and 5xx answers with a new
// grant each time. Config.AltinnToken exchanges a Maskinporten token for an
// Altinn platform token.
//
// Most programs want a reused token instead: Config.TokenSource returns an
// oauth2.TokenSource (golang.org/x/oauth2's ReuseTokenSourceWithExpiry over
// Exchange) and Config.Client an *http.Client that sends its tokens, and
// gets a new token once when an API answers 401.
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
package grant
