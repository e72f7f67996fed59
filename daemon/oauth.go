package daemon

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
)

// OAuth 2 error codes (RFC 6749 section 5.2, temporarily_unavailable from
// section 4.1.2.1, and invalid_target from RFC 8707).
const (
	errInvalidRequest         = "invalid_request"
	errInvalidClient          = "invalid_client"
	errUnsupportedGrantType   = "unsupported_grant_type"
	errInvalidScope           = "invalid_scope"
	errInvalidTarget          = "invalid_target"                // RFC 8707 section 2
	errInvalidAuthzDetails    = "invalid_authorization_details" // RFC 9396 section 5
	errServerError            = "server_error"
	errTemporarilyUnavailable = "temporarily_unavailable"
)

// oauthError is an OAuth 2 error answer.
type oauthError struct {
	status      int
	code        string
	description string
	retryAfter  int // seconds, for 503
}

func (e *oauthError) Error() string { return e.code + ": " + e.description }

func badRequest(code, description string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: code, description: description}
}

// mapError turns an error from getting a token into an OAuth 2 error: 503
// temporarily_unavailable when the card is away or Maskinporten fails or
// rate-limits (with Maskinporten's Retry-After when it gave one), the
// caller's invalid_scope when Maskinporten refused the scope (not
// registered, or not delegated: its 403), and server_error when the
// daemon's own configuration is at fault.
func (s *Server) mapError(err error) *oauthError {
	var oe *oauthError
	var nre *notReadyError
	var te *grant.TokenError
	switch {
	case errors.As(err, &oe):
		return oe
	case errors.As(err, &nre):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: "cannot get a token now: " + nre.reason, retryAfter: 5}
	case isDeviceFault(err):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: "the card or HSM failed while signing (" + err.Error() + "); reconnecting", retryAfter: 5}
	case isPINError(err):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: loginRefusedReason(err)}
	case errors.As(err, &te) && te.StatusCode == http.StatusTooManyRequests:
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: "Maskinporten asks the daemon to slow down: " + te.Error(), retryAfter: retrySeconds(te.RetryAfter)}
	case errors.As(err, &te) && te.StatusCode < 500:
		desc := "Maskinporten refused: " + te.Error()
		switch {
		case te.Code == errInvalidScope, te.StatusCode == http.StatusForbidden:
			// A scope not delegated (MP-250/251, 403 access_denied)
			// exceeds what the resource owner granted: RFC 6749
			// section 5.2's invalid_scope, with Maskinporten's code and
			// description kept in the description.
			return &oauthError{status: http.StatusBadRequest, code: errInvalidScope, description: desc}
		case te.Code == errInvalidAuthzDetails && strings.HasPrefix(te.MPCode, "MP-30"):
			// MP-301..303: the authorization_details the caller's
			// system_user_org made name no system user of this client:
			// the caller's request.
			return badRequest(errInvalidRequest, desc+" (the request's system_user_org: "+
				"that organisation has no system user for this client in Altinn)")
		case te.Code == errInvalidAuthzDetails:
			// A consent Maskinporten (Altinn) does not know or that was
			// not given to this organisation: the caller's to fix.
			return badRequest(errInvalidAuthzDetails, desc)
		}
		return &oauthError{status: http.StatusBadGateway, code: errServerError,
			description: desc + " (the daemon's client id, key or environment is wrong)"}
	case errors.Is(err, errSlotWait) && errors.Is(err, context.DeadlineExceeded):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: errSlotWait.Error(), retryAfter: 5}
	case errors.Is(err, grant.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		// Maskinporten's own Retry-After, if it gave one, is passed on.
		var ra time.Duration
		if errors.As(err, &te) {
			ra = te.RetryAfter
		}
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: "Maskinporten is unavailable: " + err.Error(), retryAfter: retrySeconds(ra)}
	case errors.Is(err, grant.ErrCacheFull):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: "the token cache is full (MaxKeys, --max-keys); try again later", retryAfter: 5}
	case errors.Is(err, errShuttingDown), errors.Is(err, grant.ErrCacheClosed):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: err.Error(), retryAfter: 1}
	case errors.Is(err, grant.ErrBadResponse):
		return &oauthError{status: http.StatusBadGateway, code: errServerError, description: err.Error()}
	case errors.Is(err, grant.ErrInvalidRequest):
		return badRequest(errInvalidRequest, err.Error())
	case errors.Is(err, grant.ErrInvalidConfig), errors.Is(err, ErrConfig):
		return &oauthError{status: http.StatusInternalServerError, code: errServerError,
			description: "the daemon's configuration is invalid: " + err.Error()}
	case errors.Is(err, context.Canceled):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: "the request was canceled", retryAfter: 1}
	}
	return &oauthError{status: http.StatusInternalServerError, code: errServerError, description: err.Error()}
}

// retrySeconds is the Retry-After, in whole seconds, of a 503 after an
// upstream asked to wait d: d rounded up, or 5 s if it did not ask.
func retrySeconds(d time.Duration) int {
	if d <= 0 {
		return 5
	}
	return int((d + time.Second - 1) / time.Second)
}

// fail counts and writes an error answer.
func (s *Server) fail(w http.ResponseWriter, err error) {
	var oe *oauthError
	if !errors.As(err, &oe) {
		oe = s.mapError(err)
	}
	if a, ok := w.(*answer); ok {
		a.noteError(err, oe)
	}
	s.metrics.requests.WithLabelValues(oe.code).Inc()
	s.writeError(w, oe)
}

func (s *Server) writeError(w http.ResponseWriter, oe *oauthError) {
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	h["Pragma"] = hdrNoCache
	if oe.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(oe.retryAfter))
	}
	w.WriteHeader(oe.status)
	b := append([]byte(`{"error":`), '"')
	b = append(b, oe.code...)
	b = append(b, `","error_description":`...)
	b = appendDescription(b, oe.description)
	b = append(b, "}\n"...)
	_, _ = w.Write(b)
}

// appendDescription appends s as the JSON string of an error_description,
// which RFC 6749 section 5.2 limits to %x20-21 / %x23-5B / %x5D-7E: a
// double quote becomes a single one, a backslash a slash, and any other
// byte outside the set (a control character, or part of a non-ASCII
// character in a caller's value) a question mark.
func appendDescription(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			b = append(b, '\'')
		case c == '\\':
			b = append(b, '/')
		case c < 0x20 || c > 0x7e:
			b = append(b, '?')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
