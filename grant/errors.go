package grant

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors. Every error of this package matches at most one of ErrInvalidRequest and
// ErrInvalidConfig (fix the input; nothing was sent), ErrRefused (4xx; retrying will not
// help), ErrUnavailable (network, timeout or 5xx after the retries) and ErrBadResponse.
var (
	// ErrInvalidRequest is matched by a *ValidationError.
	ErrInvalidRequest = errors.New("grant: invalid request")
	// ErrInvalidConfig is matched by a *ConfigError and an *EnvironmentMismatchError.
	ErrInvalidConfig = errors.New("grant: invalid configuration")
	// ErrRefused is matched by a *TokenError for an HTTP 4xx answer.
	ErrRefused = errors.New("grant: request refused")
	// ErrUnavailable is matched by a *TokenError for a 5xx answer and by
	// network failures and timeouts.
	ErrUnavailable = errors.New("grant: server unavailable")
	// ErrBadResponse is matched by a *ResponseError.
	ErrBadResponse = errors.New("grant: bad response")
	// ErrUnknownIssuer is returned by EnvironmentForCertificate for a CA
	// that is not a known Buypass or Commfides CA.
	ErrUnknownIssuer = errors.New("grant: unknown certificate issuer")
	// ErrCertificateExpired is wrapped by the *ConfigError for a signer
	// whose certificate has expired: a key problem, not a usage error.
	ErrCertificateExpired = errors.New("grant: the certificate has expired")
	// ErrEnvironmentMismatch is matched by an *EnvironmentMismatchError.
	ErrEnvironmentMismatch = errors.New("grant: certificate does not belong to the environment")
)

// fieldError is the message of ValidationError and ConfigError.
func fieldError(field, value, reason string, err error) string {
	s := "grant: invalid " + field
	if value != "" {
		s += fmt.Sprintf(" %q", value)
	}
	s += ": " + reason
	if err != nil {
		s += ": " + err.Error()
	}
	return s
}

// ValidationError reports a Request field that cannot be sent.
type ValidationError struct {
	Field  string // the claim name: "scope", "resource", "consumer_org", "pid", ...
	Value  string // the offending value as given; a pid masked after six digits
	Reason string // why it cannot be sent
}

// Error returns a one-line message.
func (e *ValidationError) Error() string { return fieldError(e.Field, e.Value, e.Reason, nil) }

// Is reports whether target is ErrInvalidRequest.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidRequest }

// ConfigError reports a Config or Environment field that cannot be used.
type ConfigError struct {
	Field  string // the Go field name, such as "ClientID" or "Environment.TokenEndpoint"
	Value  string // the offending value, if any
	Reason string // why it cannot be used
	Err    error  // the underlying error, if any
}

// Error returns a one-line message.
func (e *ConfigError) Error() string { return fieldError(e.Field, e.Value, e.Reason, e.Err) }

// Is reports whether target is ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

// EnvironmentMismatchError reports a certificate of one environment used
// in the other, which Maskinporten refuses.
type EnvironmentMismatchError struct {
	Environment            string // the environment asked for: "test" or "prod"
	CertificateEnvironment string // the environment of the certificate's issuer
	Issuer                 string // the issuing CA's common name
}

// Error returns a one-line message naming both environments.
func (e *EnvironmentMismatchError) Error() string {
	return fmt.Sprintf("grant: the certificate is a %s certificate (issued by %q) but the environment is %s; Maskinporten %s accepts only %s certificates",
		e.CertificateEnvironment, e.Issuer, e.Environment, e.Environment, e.Environment)
}

// Is reports whether target is ErrEnvironmentMismatch or ErrInvalidConfig.
func (e *EnvironmentMismatchError) Is(target error) bool {
	return target == ErrEnvironmentMismatch || target == ErrInvalidConfig
}

// TokenError is an error answer from Maskinporten's token endpoint or from
// Altinn's exchange endpoint.
type TokenError struct {
	URL        string // the endpoint that answered
	StatusCode int    // the HTTP status code
	Code       string // the OAuth 2 "error" field, such as "invalid_grant"
	// Description is "error_description", or an excerpt of another body.
	Description string
	ErrorURI    string // the "error_uri" field, if any
	MPCode      string // Maskinporten's code, such as "MP-124", from Description or ErrorURI
	Hint        string // what usually fixes this error, or empty
	// Skew is the server's clock (its Date header) minus the local clock,
	// or zero if within five seconds.
	Skew     time.Duration
	Attempts int // the number of requests made, at least 1
	// RetryAfter is the last answer's Retry-After (RFC 9110 10.2.3), or
	// zero: ask again no sooner.
	RetryAfter time.Duration
}

// Error returns a one-line message with the hint, never a grant or token.
func (e *TokenError) Error() string {
	var b strings.Builder
	what := "refused the request"
	if e.StatusCode >= 500 {
		what = "unavailable"
	}
	fmt.Fprintf(&b, "grant: %s %s: HTTP %d", e.URL, what, e.StatusCode)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	if e.MPCode != "" && !strings.Contains(e.Description, e.MPCode) {
		fmt.Fprintf(&b, " (%s)", e.MPCode)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	if d := e.Skew; d != 0 {
		rel := "ahead of"
		if d < 0 {
			d, rel = -d, "behind"
		}
		fmt.Fprintf(&b, "; clock skew: the server's clock is %s %s the local clock", d, rel)
	}
	if e.Hint != "" {
		b.WriteString("; hint: " + e.Hint)
	}
	return b.String()
}

// Is reports whether target is ErrRefused (4xx) or ErrUnavailable (5xx).
func (e *TokenError) Is(target error) bool {
	return target == ErrRefused && e.StatusCode >= 400 && e.StatusCode < 500 ||
		target == ErrUnavailable && e.StatusCode >= 500
}

// ResponseError reports a successful HTTP answer whose body cannot be used.
type ResponseError struct {
	URL        string // the endpoint that answered
	StatusCode int    // the HTTP status code
	Reason     string // what is wrong with the body
	Err        error  // the underlying error, if any
}

// Error returns a one-line message.
func (e *ResponseError) Error() string {
	s := fmt.Sprintf("grant: bad response from %s (HTTP %d): %s", e.URL, e.StatusCode, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is reports whether target is ErrBadResponse.
func (e *ResponseError) Is(target error) bool { return target == ErrBadResponse }

// Unwrap returns the underlying error.
func (e *ResponseError) Unwrap() error { return e.Err }

// unavailableError wraps a network failure or timeout.
type unavailableError struct {
	url      string
	attempts int
	err      error
}

func (e *unavailableError) Error() string {
	after := ""
	if e.attempts > 1 {
		after = fmt.Sprintf(" after %d attempts", e.attempts)
	}
	return fmt.Sprintf("grant: %s unavailable%s: %v", e.url, after, e.err)
}

func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }
func (e *unavailableError) Unwrap() error        { return e.err }
