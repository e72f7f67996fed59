package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
)

// OAuth 2 error codes: RFC 6749 section 5.2 (temporarily_unavailable from
// section 4.1.2.1), RFC 8707's invalid_target, RFC 9396's
// invalid_authorization_details.
const (
	errInvalidRequest         = "invalid_request"
	errInvalidClient          = "invalid_client"
	errUnsupportedGrantType   = "unsupported_grant_type"
	errInvalidScope           = "invalid_scope"
	errInvalidTarget          = "invalid_target"
	errInvalidAuthzDetails    = "invalid_authorization_details"
	errServerError            = "server_error"
	errTemporarilyUnavailable = "temporarily_unavailable"
)

// oauthError is an OAuth 2 error answer.
type oauthError struct {
	status      int
	code        string
	description string
	retryAfter  int    // seconds, for 503
	reason      string // why a caller was refused before its request was read (reason...); "" for others
}

func (e *oauthError) Error() string { return e.code + ": " + e.description }

func badRequest(code, description string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: code, description: description}
}

func unavailable(description string, retryAfter int) *oauthError {
	return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable, description: description, retryAfter: retryAfter}
}

func refuse(reason string, status int, code, description string) *oauthError {
	return &oauthError{status: status, code: code, description: description, reason: reason}
}

// notReadyError is the error for a token that the cache cannot answer
// while the daemon is not ready.
type notReadyError struct{ reason string }

func (e *notReadyError) Error() string { return e.reason }

// errSlotWait is matched by the error of an exchange that ended before it
// got a slot (see admission).
var errSlotWait = errors.New("waited too long for a turn to call Maskinporten: this caller's other requests take its share (--max-concurrent-per-caller), or all requests do (--max-concurrent)")

var errShuttingDown = errors.New("the daemon is shutting down")

// errAuditUnwritable answers a request whose token's audit line could not
// be written.
var errAuditUnwritable = unavailable("the daemon cannot write its audit log and serves no token without its audit line; ask its operator (the daemon's log says why)", 30)

// mapError is the one table from an error to the answer: 503 when the card
// is away or Maskinporten fails or asks to slow down (with its
// Retry-After), the caller's own 400 when Maskinporten refused what the
// caller asked for, and 5xx when the daemon's configuration is at fault.
func (s *Server) mapError(err error) *oauthError {
	var oe *oauthError
	var nre *notReadyError
	var te *grant.TokenError
	isTE := errors.As(err, &te)
	switch {
	case errors.As(err, &oe):
		return oe
	case errors.As(err, &nre):
		return unavailable("cannot get a token now: "+nre.reason, 5)
	case isDeviceFault(err):
		return unavailable("the card or HSM failed while signing ("+err.Error()+"); reconnecting", 5)
	case isPINError(err):
		return unavailable(loginRefusedReason(err), 0)
	case isTE && te.StatusCode == http.StatusTooManyRequests:
		return unavailable("Maskinporten asks the daemon to slow down: "+te.Error(), retrySeconds(te.RetryAfter))
	case isTE && te.StatusCode < 500:
		desc := "Maskinporten refused: " + te.Error()
		switch {
		case te.Code == errInvalidScope, te.StatusCode == http.StatusForbidden:
			// A scope not delegated (MP-250/251, 403) exceeds what the
			// resource owner granted: the caller's invalid_scope.
			return badRequest(errInvalidScope, desc)
		case te.Code == errInvalidAuthzDetails && strings.HasPrefix(te.MPCode, "MP-30"):
			// MP-301..303: no system user of this client for the caller's
			// system_user_org.
			return badRequest(errInvalidRequest, desc+" (the request's system_user_org: "+
				"that organisation has no system user for this client in Altinn)")
		case te.Code == errInvalidAuthzDetails:
			return badRequest(errInvalidAuthzDetails, desc) // a consent unknown, or not given to this organisation
		}
		return &oauthError{status: http.StatusBadGateway, code: errServerError,
			description: desc + " (the daemon's client id, key or environment is wrong)"}
	case errors.Is(err, errSlotWait) && errors.Is(err, context.DeadlineExceeded):
		return unavailable(errSlotWait.Error(), 5)
	case errors.Is(err, grant.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		var ra time.Duration
		if isTE {
			ra = te.RetryAfter
		}
		return unavailable("Maskinporten is unavailable: "+err.Error(), retrySeconds(ra))
	case errors.Is(err, errCacheFull):
		return unavailable(err.Error(), 5)
	case errors.Is(err, errShuttingDown), errors.Is(err, errCacheClosed):
		return unavailable(err.Error(), 1)
	case errors.Is(err, context.Canceled):
		return unavailable("the request was canceled", 1)
	case errors.Is(err, grant.ErrBadResponse):
		return &oauthError{status: http.StatusBadGateway, code: errServerError, description: err.Error()}
	case errors.Is(err, grant.ErrInvalidRequest):
		return badRequest(errInvalidRequest, err.Error())
	case errors.Is(err, grant.ErrInvalidConfig), errors.Is(err, ErrConfig):
		return &oauthError{status: http.StatusInternalServerError, code: errServerError,
			description: "the daemon's configuration is invalid: " + err.Error()}
	}
	return &oauthError{status: http.StatusInternalServerError, code: errServerError, description: err.Error()}
}

// retrySeconds is the Retry-After, in whole seconds, after an upstream
// asked to wait d: d rounded up, or 5 s if it did not ask.
func retrySeconds(d time.Duration) int {
	if d <= 0 {
		return 5
	}
	return int((d + time.Second - 1) / time.Second)
}

// Header values every JSON answer shares, so that setting them allocates
// nothing.
var (
	hdrJSON    = []string{"application/json;charset=UTF-8"}
	hdrNoStore = []string{"no-store"}
	hdrNoCache = []string{"no-cache"}
)

// writeJSON answers status with v as JSON, never to be cached.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h["Content-Type"], h["Cache-Control"], h["Pragma"] = hdrJSON, hdrNoStore, hdrNoCache
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers oe. Its error_description keeps to RFC 6749 section
// 5.2's characters (%x20-21 / %x23-5B / %x5D-7E): a double quote becomes a
// single one, a backslash a slash, any other byte outside a question mark.
func (s *Server) writeError(w http.ResponseWriter, oe *oauthError) {
	if oe.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(oe.retryAfter))
	}
	desc := []byte(oe.description)
	for i, c := range desc {
		switch {
		case c == '"':
			desc[i] = '\''
		case c == '\\':
			desc[i] = '/'
		case c < 0x20 || c > 0x7e:
			desc[i] = '?'
		}
	}
	writeJSON(w, oe.status, struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{oe.code, string(desc)})
}
