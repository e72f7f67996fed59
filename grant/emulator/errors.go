package emulator

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
)

// A rejection is an answer of the token endpoint other than a token, shaped
// as Maskinporten shapes it:
//
//	{"error":"invalid_grant",
//	 "error_description":"Invalid assertion. Client authentication failed. Expired key. (trace_id: 3566…)",
//	 "error_uri":"https://test.maskinporten.no/errors/MP-121"}
//
// The MP code is carried only in error_uri (as the real service does), never
// in the description; errors without a documented code have no error_uri.
type rejection struct {
	status int    // HTTP status
	error  string // OAuth 2.0 error code
	code   string // Maskinporten code such as "MP-121", or ""
	text   string // the documented text
	detail string // what exactly was wrong, appended to text
}

func (r *rejection) Error() string {
	s := r.error + ": " + r.description()
	if r.code != "" {
		s += " (" + r.code + ")"
	}
	return s
}

func (r *rejection) description() string {
	if r.detail == "" {
		return r.text
	}
	return r.text + " " + r.detail
}

// statsKey is the key under which Stats.Rejected counts the rejection.
func (r *rejection) statsKey() string {
	if r.code != "" {
		return r.code
	}
	return r.error
}

// The OAuth 2.0 error codes Maskinporten answers with.
const (
	errInvalidRequest       = "invalid_request"
	errInvalidGrant         = "invalid_grant"
	errInvalidScope         = "invalid_scope"
	errUnsupportedGrantType = "unsupported_grant_type"
	errAccessDenied         = "access_denied"
	errInvalidAuthzDetails  = "invalid_authorization_details" // RFC 9396
	errServerError          = "server_error"
	errUnavailable          = "temporarily_unavailable"
)

// mpErrors are Maskinporten's refusals by MP code. The texts are its own,
// from the troubleshooting page (docs.digdir.no maskinporten_feilsoking,
// felleslosninger/docs) and from answers of the real service quoted in
// public issues; a detail given to mp follows the text.
var mpErrors = map[string]rejection{
	// MP-011 covers a grant that cannot be read or carries a claim of the
	// wrong shape or a claim Maskinporten does not know.
	"MP-011": {error: errInvalidRequest, text: "Invalid assertion. Invalid parameter value."},
	"MP-012": {error: errInvalidGrant, text: "Grant is used before.", detail: "Build and sign a new grant, with a new jti, for every request."},
	"MP-100": {error: errInvalidGrant, text: "Invalid assertion. Client authentication failed.", detail: "Client not found."},
	"MP-110": {error: errInvalidGrant, text: "Invalid assertion. Client authentication failed. Invalid JWT claim aud."},
	"MP-120": {error: errInvalidGrant, text: "Invalid assertion. Client authentication failed. The JWT is signed with an invalid certificate."},
	"MP-121": {error: errInvalidGrant, text: "Invalid assertion. Client authentication failed. Expired key."},
	"MP-122": {error: errInvalidGrant, text: "Invalid JWT. Invalid organization number for client. Does not match certificate orgno."},
	"MP-123": {error: errInvalidGrant, text: "Invalid JWT header x5c."},
	"MP-124": {error: errInvalidGrant, text: "Invalid JWT signature."},
	"MP-130": {error: errInvalidGrant, text: "JWT is expired."},
	"MP-200": {error: errInvalidScope, text: "Token request contains invalid scopes for client,"},
	"MP-201": {error: errInvalidScope, text: "Token request contains scopes not allowed for maskinporten,"},
	"MP-251": {status: http.StatusForbidden, error: errAccessDenied, text: "Consumer"},
	"MP-301": {error: errInvalidAuthzDetails, text: "Unknown authorization details type."},
	"MP-302": {error: errInvalidAuthzDetails, text: "Unknown fields in the authorization details."},
	"MP-303": {error: errInvalidAuthzDetails, text: "Invalid authorization details values."},
}

// mp returns Maskinporten's refusal code, with detail if it is not empty.
func mp(code, detail string) *rejection {
	r := mpErrors[code]
	r.code = code
	if r.status == 0 {
		r.status = http.StatusBadRequest
	}
	if detail != "" {
		r.detail = detail
	}
	return &r
}

// refusal is a refusal without an MP code: Maskinporten documents none, and
// answers without an error_uri.
func refusal(oauthErr, text, detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: oauthErr, text: text, detail: detail}
}

// tooLong is MP-130 for a grant that lives longer than the server allows.
func tooLong(detail string) *rejection {
	r := mp("MP-130", detail)
	r.text = "JWT has too long lifetime."
	return r
}

func badRequest(detail string) *rejection {
	return refusal(errInvalidRequest, "Invalid request.", detail)
}

// injected is the answer FailNext asks for.
func injected(status int) *rejection {
	e := errInvalidRequest
	switch {
	case status == http.StatusServiceUnavailable:
		e = errUnavailable
	case status >= 500:
		e = errServerError
	}
	return &rejection{status: status, error: e,
		text: "The emulator was told to fail this request (HTTP " + strconv.Itoa(status) + ")."}
}

// errorBody is the JSON body of an error answer.
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	URI         string `json:"error_uri,omitempty"`
}

// write sends the rejection. issuer is the emulator's issuer, with its
// trailing slash; error_uri is built from it as the real service builds
// https://test.maskinporten.no/errors/MP-200.
func (r *rejection) write(w http.ResponseWriter, issuer string) {
	body := errorBody{Error: r.error, Description: r.description() + " (trace_id: " + traceID() + ")"}
	if r.code != "" {
		body.URI = issuer + "errors/" + r.code
	}
	if r.status == http.StatusServiceUnavailable || r.status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeNoStore(w, r.status, body)
}

// writeNoStore sends v as JSON with the headers of a token endpoint answer.
func writeNoStore(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func traceID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
