package emulator

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// A rejection is a refusal of the token endpoint, shaped as Maskinporten's:
// the MP code is only in error_uri, never in the description.
type rejection struct {
	status int    // HTTP status
	error  string // OAuth 2.0 error code
	code   string // Maskinporten code such as "MP-121", or ""
	text   string // the documented text
	detail string // what exactly was wrong, appended to text
}

func (r *rejection) Error() string {
	return strings.TrimSuffix(r.error+": "+r.description()+" ("+r.code+")", " ()")
}

func (r *rejection) description() string { return strings.TrimSpace(r.text + " " + r.detail) }

// mpErrors are Maskinporten's refusals by MP code (then a word of ours) or
// by our name where it has no code. The texts are its own (docs.digdir.no
// maskinporten_feilsoking, and answers quoted in public issues).
var mpErrors = map[string]rejection{
	// MP-011: a grant that cannot be read, or a claim of the wrong shape or unknown.
	"MP-011":       {error: "invalid_request", text: "Invalid assertion. Invalid parameter value."},
	"MP-012":       {error: "invalid_grant", text: "Grant is used before.", detail: "Build and sign a new grant, with a new jti, for every request."},
	"MP-100":       {error: "invalid_grant", text: "Invalid assertion. Client authentication failed.", detail: "Client not found."},
	"MP-110":       {error: "invalid_grant", text: "Invalid assertion. Client authentication failed. Invalid JWT claim aud."},
	"MP-120":       {error: "invalid_grant", text: "Invalid assertion. Client authentication failed. The JWT is signed with an invalid certificate."},
	"MP-121":       {error: "invalid_grant", text: "Invalid assertion. Client authentication failed. Expired key."},
	"MP-122":       {error: "invalid_grant", text: "Invalid JWT. Invalid organization number for client. Does not match certificate orgno."},
	"MP-123":       {error: "invalid_grant", text: "Invalid JWT header x5c."},
	"MP-124":       {error: "invalid_grant", text: "Invalid JWT signature."},
	"MP-130":       {error: "invalid_grant", text: "JWT is expired."},
	"MP-130 long":  {error: "invalid_grant", text: "JWT has too long lifetime."},
	"MP-200":       {error: "invalid_scope", text: "Token request contains invalid scopes for client,"},
	"MP-201":       {error: "invalid_scope", text: "Token request contains scopes not allowed for maskinporten,"},
	"MP-251":       {status: http.StatusForbidden, error: "access_denied", text: "Consumer"},
	"MP-301":       {error: "invalid_authorization_details", text: "Unknown authorization details type."},
	"MP-302":       {error: "invalid_authorization_details", text: "Unknown fields in the authorization details."},
	"MP-303":       {error: "invalid_authorization_details", text: "Invalid authorization details values."},
	"request":      {error: "invalid_request", text: "Invalid request."},
	"kid":          {error: "invalid_grant", text: "Invalid assertion. Client authentication failed. Unknown key identifier (kid) for client."},
	"iat":          {error: "invalid_grant", text: "Issue time is after now."},
	"consumer_org": {error: "invalid_request", text: "Validation of JWT claim failed: The combination consumer_org in claim and delegation scope on client is invalid."},
	"consent":      {error: "invalid_authorization_details", text: "Invalid consent in authorization details."},
	"grant_type":   {error: "unsupported_grant_type", text: "Unsupported grant type."},
	"method":       {status: http.StatusMethodNotAllowed, error: "invalid_request", text: "Invalid request."},
	"server_error": {status: http.StatusInternalServerError, error: "server_error", text: "The emulator could not sign the token."},
}

// mp returns the refusal named key (see mpErrors), with detail if not empty.
func mp(key, detail string) *rejection {
	r := mpErrors[key]
	if code, _, _ := strings.Cut(key, " "); strings.HasPrefix(code, "MP-") {
		r.code = code
	}
	r.status = cmp.Or(r.status, http.StatusBadRequest)
	r.detail = cmp.Or(detail, r.detail)
	return &r
}

// injected is the answer FailNext asks for.
func injected(status int) *rejection {
	r := &rejection{status: status, error: "invalid_request", text: "The emulator was told to fail this request (HTTP " + strconv.Itoa(status) + ")."}
	if status == http.StatusServiceUnavailable {
		r.error = "temporarily_unavailable"
	} else if status >= 500 {
		r.error = "server_error"
	}
	return r
}

// write sends the rejection; error_uri is issuer + "errors/MP-200" as the
// real service builds it.
func (r *rejection) write(w http.ResponseWriter, issuer string) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	body := struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		URI         string `json:"error_uri,omitempty"`
	}{Error: r.error, Description: r.description() + " (trace_id: " + hex.EncodeToString(b[:]) + ")"}
	if r.code != "" {
		body.URI = issuer + "errors/" + r.code
	}
	if r.status == http.StatusServiceUnavailable || r.status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, r.status, body)
}

// writeJSON is every JSON answer of the emulator.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
