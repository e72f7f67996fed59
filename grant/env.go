package grant

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Environment names the endpoints of one Maskinporten environment.
type Environment struct {
	Name           string // "test" or "prod" for the presets, else empty
	Issuer         string // sent as the grant's aud exactly as written, trailing slash included
	TokenEndpoint  string // the URL grants are posted to
	AltinnExchange string // the URL of Altinn's token exchange, or empty if there is none
}

var (
	// Test is Maskinporten's test environment, paired with Altinn's tt02.
	Test = preset("test", "test.maskinporten.no", "platform.tt02.altinn.no")
	// Prod is Maskinporten's production environment.
	Prod = preset("prod", "maskinporten.no", "platform.altinn.no")
)

func preset(name, host, altinn string) Environment {
	return Environment{Name: name, Issuer: "https://" + host + "/", TokenEndpoint: "https://" + host + "/token",
		AltinnExchange: "https://" + altinn + "/authentication/api/v1/exchange/maskinporten"}
}

// EnvironmentByName returns the preset named "test" or "prod" (case is
// ignored), or a *ConfigError.
func EnvironmentByName(name string) (Environment, error) {
	if p, ok := presetWhere(func(p Environment) bool { return strings.EqualFold(name, p.Name) }); ok {
		return p, nil
	}
	return Environment{}, &ConfigError{Field: "Environment", Value: name, Reason: `unknown environment: want "test" or "prod"`}
}

// presetWhere returns the first preset that match accepts.
func presetWhere(match func(Environment) bool) (Environment, bool) {
	for _, p := range []Environment{Test, Prod} {
		if match(p) {
			return p, true
		}
	}
	return Environment{}, false
}

// Validate checks that the issuer and the endpoints are usable URLs, by
// CheckEndpoint's rule. The error is a *ConfigError naming the field.
func (e Environment) Validate(allowInsecure bool) error {
	for _, f := range []struct{ name, url string }{{"Issuer", e.Issuer}, {"TokenEndpoint", e.TokenEndpoint}, {"AltinnExchange", e.AltinnExchange}} {
		if err := CheckEndpoint("Environment."+f.name, f.url, allowInsecure); err != nil && (f.url != "" || f.name != "AltinnExchange") {
			return err
		}
	}
	return nil
}

// CheckEndpoint is the rule for every URL mp-hsm sends a credential to: an absolute https
// URL with a host, without credentials or a fragment; http only for loopback hosts unless
// allowInsecure. A refusal is a *ConfigError naming field, credentials redacted.
func CheckEndpoint(field, raw string, allowInsecure bool) error {
	if raw == "" {
		return &ConfigError{Field: field, Reason: "missing"}
	}
	shown := redactURL(raw)
	u, err := url.Parse(raw)
	if err != nil {
		if shown != raw {
			// The parser's message may quote a piece of the password.
			return &ConfigError{Field: field, Value: shown, Reason: "not a URL, and credentials in a URL are not allowed"}
		}
		return &ConfigError{Field: field, Value: shown, Reason: "not a URL", Err: err}
	}
	bad := func(reason string) error { return &ConfigError{Field: field, Value: shown, Reason: reason} }
	h := strings.ToLower(u.Hostname())
	loopback := h == "localhost" || strings.HasSuffix(h, ".localhost") || net.ParseIP(h).IsLoopback() // a nil IP is not loopback
	switch {
	case !u.IsAbs() || u.Host == "" || u.Opaque != "":
		return bad("not an absolute URL")
	case u.User != nil:
		return bad("credentials in a URL are not allowed")
	case u.Fragment != "":
		return bad("a fragment is not allowed")
	case u.Scheme == "https", u.Scheme == "http" && (allowInsecure || loopback):
		return nil
	case u.Scheme == "http":
		return bad("http is allowed only for loopback hosts unless insecure endpoints are allowed; use https")
	}
	return bad("scheme must be https")
}

// urlCredentials is everything between "://" and the last "@" (user:password@).
// redactURL returns raw with everything from the first "://" to the last "@"
// after it replaced, even if raw does not parse. It runs on every grant (through
// CheckEndpoint), so no regexp: that was 15% of building one.
func redactURL(raw string) string {
	i, j := strings.Index(raw, "://"), strings.LastIndex(raw, "@")
	if i < 0 || j < i+3 {
		return raw
	}
	return raw[:i] + "://REDACTED@" + raw[j+1:]
}

// Discover fetches the RFC 8414 metadata at metadataURL in one request and returns the
// Environment it describes (Name and AltinnExchange from the preset with its issuer). If
// client is nil, one with a 30-second timeout. The URLs must pass CheckEndpoint.
func Discover(ctx context.Context, client *http.Client, metadataURL string, allowInsecure bool) (Environment, error) {
	if err := CheckEndpoint("metadata URL", metadataURL, allowInsecure); err != nil {
		return Environment{}, err
	}
	c := &Config{HTTPClient: client, attempts: 1}
	a, err := c.send(ctx, metadataURL, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, metadataURL, nil)
		if err != nil {
			return nil, &ConfigError{Field: "metadata URL", Value: metadataURL, Reason: "cannot build request", Err: err}
		}
		req.Header.Set("Accept", "application/json")
		return req, nil
	})
	if err == nil {
		err = checkStatus(a)
	}
	if err != nil {
		return Environment{}, err
	}
	return parseMetadata(metadataURL, a.status, a.body, allowInsecure)
}

// parseMetadata reads RFC 8414 metadata with usable issuer and token_endpoint.
func parseMetadata(metadataURL string, status int, body []byte, allowInsecure bool) (Environment, error) {
	var m struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return Environment{}, &ResponseError{URL: metadataURL, StatusCode: status, Reason: "metadata is not a JSON object", Err: err}
	}
	if m.Issuer == "" {
		return Environment{}, &ResponseError{URL: metadataURL, StatusCode: status, Reason: "metadata has no issuer"}
	}
	if m.TokenEndpoint == "" {
		return Environment{}, &ResponseError{URL: metadataURL, StatusCode: status, Reason: "metadata has no token_endpoint"}
	}
	env := Environment{Issuer: m.Issuer, TokenEndpoint: m.TokenEndpoint}
	if p, ok := presetWhere(func(p Environment) bool { return p.Issuer == m.Issuer }); ok {
		env.Name, env.AltinnExchange = p.Name, p.AltinnExchange
	}
	if err := env.Validate(allowInsecure); err != nil {
		return Environment{}, &ResponseError{URL: metadataURL, StatusCode: status, Reason: "metadata holds an unusable endpoint", Err: err}
	}
	return env, nil
}

// issuingCAs are the CAs (subject CN) of enterprise certificates, by the
// environment that accepts them.
var issuingCAs = map[string]string{
	"Buypass Class 3 Test4 CA 1":                           "test",
	"Buypass Class 3 Test4 CA 3":                           "test",
	"Buypass Class 3 Test4 CA G2 HT Business":              "test",
	"Buypass Class 3 Test4 CA G2 ST Business":              "test",
	"Commfides CPN Enterprise-Norwegian SHA256 CA - TEST":  "test",
	"Commfides CPN Enterprise-Norwegian SHA256 CA - TEST2": "test",
	"Commfides Legal Person - G3 - TEST":                   "test",

	"Buypass Class 3 CA 1":              "prod",
	"Buypass Class 3 CA 3":              "prod",
	"Buypass Class 3 CA G2 HT Business": "prod",
	"Buypass Class 3 CA G2 ST Business": "prod",
	"CPN Enterprise SHA256 CLASS 3":     "prod",
	"Commfides Legal Person - G3":       "prod",
}

// EnvironmentForCertificate returns the preset, Test or Prod, that accepts the enterprise
// certificate cert by its Buypass or Commfides issuing CA: the one place the environment
// is inferred from a certificate. For other issuers the error matches ErrUnknownIssuer.
func EnvironmentForCertificate(cert *x509.Certificate) (Environment, error) {
	if cert == nil {
		return Environment{}, fmt.Errorf("%w: no certificate", ErrUnknownIssuer)
	}
	if name, ok := issuingCAs[cert.Issuer.CommonName]; ok {
		return EnvironmentByName(name)
	}
	return Environment{}, fmt.Errorf("%w: %q", ErrUnknownIssuer, cert.Issuer.CommonName)
}

// CheckEnvironment refuses a test certificate in production and the other
// way round with an *EnvironmentMismatchError; it accepts what it cannot
// judge (no chain, an unknown CA, another environment).
func CheckEnvironment(env Environment, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return nil
	}
	want := env.Name
	if p, ok := presetWhere(func(p Environment) bool { return p.Issuer == env.Issuer }); ok {
		want = p.Name
	}
	if want != Test.Name && want != Prod.Name {
		return nil
	}
	got, err := EnvironmentForCertificate(chain[0])
	if err != nil || got.Name == want {
		return nil
	}
	return &EnvironmentMismatchError{Environment: want, CertificateEnvironment: got.Name, Issuer: chain[0].Issuer.CommonName}
}
