package grant

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
)

// Token is an access token from Maskinporten or Altinn.
type Token struct {
	AccessToken string    // the token; opaque: do not parse it
	TokenType   string    // "Bearer"
	Scope       string    // the scopes granted, as the server reported them; informational
	ExpiresIn   int       // the lifetime in seconds the server gave
	Expiry      time.Time // when the request started plus ExpiresIn: a little early, never late
}

// OAuth2 returns the token as an *oauth2.Token.
func (t *Token) OAuth2() *oauth2.Token {
	return &oauth2.Token{AccessToken: t.AccessToken, TokenType: t.TokenType, Expiry: t.Expiry, ExpiresIn: int64(t.ExpiresIn)}
}

// LogValue implements slog.LogValuer: it logs everything but the token.
func (t *Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("token_type", t.TokenType), slog.String("scope", t.Scope),
		slog.Int("expires_in", t.ExpiresIn), slog.Time("expiry", t.Expiry))
}

// Exchange gets a new access token for req, without a cache (TokenSource has
// one). If req or c is invalid, nothing is sent. Network errors and 5xx
// answers are retried (three attempts within ctx's deadline), each with a
// new grant, never the same one; a 4xx answer is a *TokenError matching
// ErrRefused, with a hint.
func (c *Config) Exchange(ctx context.Context, req Request) (*Token, error) {
	k, n, err := c.prepare(req)
	if err != nil {
		return nil, err
	}
	endpoint := c.Environment.TokenEndpoint
	log := c.logger()
	a, err := c.send(ctx, endpoint, func() (*http.Request, error) {
		g, jti, err := c.grant(k, n)
		if err != nil {
			return nil, err
		}
		log.DebugContext(ctx, "maskinporten token request", "url", endpoint, "client_id", c.ClientID, "scope", n.scope, "jti", jti)
		body := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {g}}.Encode()
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(body))
		if err != nil {
			return nil, &ConfigError{Field: "Environment.TokenEndpoint", Value: endpoint, Reason: "cannot build a request", Err: err}
		}
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Accept", "application/json")
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	if err := checkStatus(a); err != nil {
		return nil, err
	}
	t, err := parseTokenResponse(endpoint, a.status, a.body, a.start)
	if err != nil {
		return nil, err
	}
	log.DebugContext(ctx, "maskinporten token issued", "token", t, "attempts", a.attempts)
	return t, nil
}

// checkStatus returns a *TokenError for 4xx and a *ResponseError for non-2xx.
func checkStatus(a *answer) error {
	switch {
	case a.status >= 400:
		return tokenError(a)
	case a.status < 200 || a.status > 299:
		return &ResponseError{URL: a.url, StatusCode: a.status, Reason: "unexpected HTTP status " + strconv.Itoa(a.status) + " " + http.StatusText(a.status)}
	}
	return nil
}

// tokenError makes a *TokenError from an OAuth 2 error, Altinn's problem
// details, or any other body.
func tokenError(a *answer) *TokenError {
	e := &TokenError{URL: a.url, StatusCode: a.status, Skew: a.skew, Attempts: a.attempts}
	e.RetryAfter, _ = retryAfter(a.header, a.start)
	var body struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
		ErrorURI         string `json:"error_uri"`
		Title            string `json:"title"`
		Detail           string `json:"detail"`
	}
	if json.Unmarshal(a.body, &body) == nil {
		e.Code = excerpt(body.Error)
		e.Description = excerpt(body.ErrorDescription)
		e.ErrorURI = excerpt(body.ErrorURI)
		if e.Code == "" && e.Description == "" {
			e.Description = excerpt(body.Title + " " + body.Detail)
		}
	} else {
		e.Description = excerpt(string(a.body))
	}
	// The code may be only in error_uri (https://maskinporten.no/errors/MP-121).
	for _, s := range []string{e.Description, e.ErrorURI, e.Code} {
		if e.MPCode = mpCode.FindString(s); e.MPCode != "" {
			break
		}
	}
	e.Hint = hint(e)
	return e
}

// mpCode finds Maskinporten's error code, such as MP-121.
var mpCode = regexp.MustCompile(`MP-[0-9]+`)

// mpHints maps Maskinporten's error codes to advice.
var mpHints = map[string]string{
	"MP-100": "the client was not found or could not be authenticated: check the client id and the environment (test or prod)",
	"MP-110": "aud must be the environment's issuer, trailing slash included (such as https://maskinporten.no/)",
	"MP-120": "the certificate or key is not valid for this client: renew it and register it again",
	"MP-121": "the key or certificate has expired (keys live a year): renew it and register it again",
	"MP-122": "the certificate's organisation number is not the client's organisation: this is the wrong certificate for this client",
	"MP-123": "x5c must be an array of standard-base64 DER certificates, leaf first",
	"MP-124": "the signature is invalid: the key does not match the certificate or the registered key, or the alg is wrong",
	"MP-130": "the grant has expired: check the local clock (NTP) and the grant lifetime",
	"MP-012": "the grant was used before: every request needs a new grant with a new jti",
	"MP-200": "the scope is not registered on this client: apply for it in Samarbeidsportalen",
	"MP-201": "the scope is not registered on this client: apply for it in Samarbeidsportalen",
	"MP-250": "the scope is not granted to this client or organisation: check the delegation in Altinn",
	"MP-251": "the scope is not delegated: check the delegation in Altinn",
}

func hint(e *TokenError) string {
	if h, ok := mpHints[e.MPCode]; ok {
		return h
	}
	d := strings.ToLower(e.Description)
	switch {
	case strings.Contains(d, "unknown key identifier"):
		return "the kid is not registered on this client: check the kid sent (--kid) against the client's keys (mp-hsm admin keys list)"
	case strings.Contains(d, "issue time is after now") || e.Skew != 0 && e.StatusCode == http.StatusBadRequest:
		return "the local clock differs from Maskinporten's: synchronise it with NTP"
	case e.Code == "invalid_scope":
		return "the scope is not available to this client: apply for it in Samarbeidsportalen or check the delegation in Altinn"
	case e.Code == "invalid_client" || e.StatusCode == http.StatusUnauthorized:
		return "check the client id, the key and the environment (test or prod)"
	case e.StatusCode >= 500:
		return "the server is failing; try again later"
	}
	return ""
}

// parseTokenResponse reads a 2xx token response; Expiry counts from start.
func parseTokenResponse(endpoint string, status int, body []byte, start time.Time) (*Token, error) {
	var resp struct {
		AccessToken string      `json:"access_token"`
		TokenType   string      `json:"token_type"`
		ExpiresIn   json.Number `json:"expires_in"`
		Scope       string      `json:"scope"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, &ResponseError{URL: endpoint, StatusCode: status, Reason: "token response is not a JSON object", Err: err}
	}
	if resp.AccessToken == "" {
		return nil, &ResponseError{URL: endpoint, StatusCode: status, Reason: "token response has no access_token"}
	}
	if resp.TokenType == "" {
		resp.TokenType = "Bearer"
	}
	if !strings.EqualFold(resp.TokenType, "Bearer") {
		return nil, &ResponseError{URL: endpoint, StatusCode: status, Reason: "token_type " + strconv.Quote(resp.TokenType) + " is not Bearer"}
	}
	exp, err := strconv.ParseInt(resp.ExpiresIn.String(), 10, 32)
	if err != nil || exp <= 0 {
		return nil, &ResponseError{URL: endpoint, StatusCode: status, Reason: "expires_in " + strconv.Quote(resp.ExpiresIn.String()) + " is not a positive integer"}
	}
	return &Token{AccessToken: resp.AccessToken, TokenType: "Bearer", Scope: resp.Scope, ExpiresIn: int(exp),
		Expiry: start.Add(time.Duration(exp) * time.Second)}, nil
}

// AltinnToken exchanges a Maskinporten access token for an Altinn platform
// token (a JWT whose exp, read unverified, sets Expiry) at the environment's
// AltinnExchange URL. Errors and retries follow Exchange.
func (c *Config) AltinnToken(ctx context.Context, mpToken string) (*Token, error) {
	endpoint := c.Environment.AltinnExchange
	if endpoint == "" {
		return nil, &ConfigError{Field: "Environment.AltinnExchange", Reason: "missing: this environment has no Altinn token exchange"}
	}
	if err := CheckEndpoint("Environment.AltinnExchange", endpoint, c.AllowInsecure); err != nil {
		return nil, err
	}
	if mpToken == "" || !ValidScope(mpToken) {
		return nil, &ValidationError{Field: "access_token", Reason: "the Maskinporten token is empty or holds characters a token cannot hold"}
	}
	log := c.logger()
	a, err := c.send(ctx, endpoint, func() (*http.Request, error) {
		log.DebugContext(ctx, "altinn token exchange", "url", endpoint)
		r, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
		if err != nil {
			return nil, &ConfigError{Field: "Environment.AltinnExchange", Value: endpoint, Reason: "cannot build a request", Err: err}
		}
		r.Header.Set("Authorization", "Bearer "+mpToken)
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	if err := checkStatus(a); err != nil {
		var e *TokenError
		if errors.As(err, &e) && (a.status == http.StatusUnauthorized || a.status == http.StatusForbidden) {
			e.Hint = "Altinn did not accept the Maskinporten token: check the environment and that the token has the scopes the Altinn API needs"
		}
		return nil, err
	}
	raw := strings.TrimSpace(string(a.body))
	_ = json.Unmarshal(a.body, &raw) // some versions answer with a JSON string; else raw is kept
	var cl struct {
		jwt.RegisteredClaims
		Scope string `json:"scope"`
	}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, &cl); err != nil {
		return nil, &ResponseError{URL: endpoint, StatusCode: a.status, Reason: "Altinn token is not a JWT", Err: err}
	}
	if cl.ExpiresAt == nil {
		return nil, &ResponseError{URL: endpoint, StatusCode: a.status, Reason: "Altinn token has no exp claim"}
	}
	// Measure the lifetime on the server's clock (exp - iat) and apply it
	// to the local clock, so that clock skew does not shift the expiry.
	lifetime := cl.ExpiresAt.Sub(a.start)
	if cl.IssuedAt != nil {
		lifetime = cl.ExpiresAt.Sub(cl.IssuedAt.Time)
	}
	secs := int(lifetime / time.Second)
	if secs <= 0 {
		return nil, &ResponseError{URL: endpoint, StatusCode: a.status, Reason: "Altinn token has already expired"}
	}
	t := &Token{AccessToken: raw, TokenType: "Bearer", Scope: cl.Scope, ExpiresIn: secs, Expiry: a.start.Add(time.Duration(secs) * time.Second)}
	log.DebugContext(ctx, "altinn token issued", "token", t)
	return t, nil
}
