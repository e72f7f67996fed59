package grant

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

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
	if strings.HasPrefix(raw, `"`) { // some versions answer with a JSON string
		var s string
		if err := json.Unmarshal([]byte(raw), &s); err != nil {
			return nil, &ResponseError{URL: endpoint, StatusCode: a.status, Reason: "Altinn token is a malformed JSON string", Err: err}
		}
		raw = s
	}
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
	t := &Token{
		AccessToken: raw,
		TokenType:   "Bearer",
		Scope:       cl.Scope,
		ExpiresIn:   secs,
		Expiry:      a.start.Add(time.Duration(secs) * time.Second),
	}
	log.DebugContext(ctx, "altinn token issued", "token", t)
	return t, nil
}
