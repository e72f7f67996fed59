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
	s := r.error + ": " + r.text
	if r.detail != "" {
		s += " " + r.detail
	}
	if r.code != "" {
		s += " (" + r.code + ")"
	}
	return s
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

// The texts below are Maskinporten's own, from the troubleshooting page
// (docs.digdir.no maskinporten_feilsoking, felleslosninger/docs) and from
// answers of the real service quoted in public issues.

func badRequest(detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidRequest, text: "Invalid request.", detail: detail}
}

// mp011 covers a grant that cannot be read or carries a claim of the wrong
// shape or a claim Maskinporten does not know.
func mp011(detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidRequest, code: "MP-011",
		text: "Invalid assertion. Invalid parameter value.", detail: detail}
}

func mp012() *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidGrant, code: "MP-012",
		text: "Grant is used before.", detail: "Build and sign a new grant, with a new jti, for every request."}
}

func mp100() *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidGrant, code: "MP-100",
		text: "Invalid assertion. Client authentication failed.", detail: "Client not found."}
}

func mp110(detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidGrant, code: "MP-110",
		text: "Invalid assertion. Client authentication failed. Invalid JWT claim aud.", detail: detail}
}

func mp120(detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidGrant, code: "MP-120",
		text: "Invalid assertion. Client authentication failed. The JWT is signed with an invalid certificate.", detail: detail}
}

func mp121(detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidGrant, code: "MP-121",
		text: "Invalid assertion. Client authentication failed. Expired key.", detail: detail}
}

func mp122(detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidGrant, code: "MP-122",
		text: "Invalid JWT. Invalid organization number for client. Does not match certificate orgno.", detail: detail}
}

func mp123(detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidGrant, code: "MP-123",
		text: "Invalid JWT header x5c.", detail: detail}
}

func mp124(detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidGrant, code: "MP-124",
		text: "Invalid JWT signature.", detail: detail}
}

func mp130(text, detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidGrant, code: "MP-130", text: text, detail: detail}
}

// unknownKid has no documented MP code; the real service answers it without
// an error_uri.
func unknownKid() *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidGrant,
		text: "Invalid assertion. Client authentication failed. Unknown key identifier (kid) for client."}
}

// issuedInFuture has no documented MP code.
func issuedInFuture(detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidGrant, text: "Issue time is after now.", detail: detail}
}

func ownConsumerOrg() *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidRequest,
		text: "Validation of JWT claim failed: The combination consumer_org in claim and delegation scope on client is invalid."}
}

func mp200(scopes string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidScope, code: "MP-200",
		text: "Token request contains invalid scopes for client, " + scopes}
}

func mp201(scopes string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidScope, code: "MP-201",
		text: "Token request contains scopes not allowed for maskinporten, " + scopes}
}

func mp251(consumer, scope, supplier string) *rejection {
	return &rejection{status: http.StatusForbidden, error: errAccessDenied, code: "MP-251",
		text: "Consumer " + consumer + " has not delegated access to the scope " + scope + " to supplier " + supplier}
}

func mp301(detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidAuthzDetails, code: "MP-301",
		text: "Unknown authorization details type.", detail: detail}
}

func mp302(detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidAuthzDetails, code: "MP-302",
		text: "Unknown fields in the authorization details.", detail: detail}
}

func mp303(detail string) *rejection {
	return &rejection{status: http.StatusBadRequest, error: errInvalidAuthzDetails, code: "MP-303",
		text: "Invalid authorization details values.", detail: detail}
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
	desc := r.text
	if r.detail != "" {
		desc += " " + r.detail
	}
	desc += " (trace_id: " + traceID() + ")"
	body := errorBody{Error: r.error, Description: desc}
	if r.code != "" {
		body.URI = issuer + "errors/" + r.code
	}
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if r.status == http.StatusServiceUnavailable || r.status == http.StatusTooManyRequests {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(r.status)
	_ = json.NewEncoder(w).Encode(body)
}

func traceID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
