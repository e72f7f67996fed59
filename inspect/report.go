package inspect

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
)

// Kinds of JWT a Report tells apart, by their claims.
const (
	KindGrant       = "grant"        // a Maskinporten JWT bearer grant (RFC 7523)
	KindAccessToken = "access_token" // a Maskinporten access token
	KindAltinnToken = "altinn_token" // an Altinn token (claims urn:altinn:...)
	KindJWT         = "jwt"          // any other JWT
)

// Report describes a JWT. Its JSON form is what mp-hsm inspect --output
// json prints, part of the command-line contract: fields are only added.
type Report struct {
	Kind         string          `json:"kind"`                            // KindGrant, KindAccessToken, KindAltinnToken or KindJWT
	Description  string          `json:"description"`                     // the kind in words
	Verified     bool            `json:"verified"`                        // always false: nothing is verified
	Now          string          `json:"now"`                             // RFC 3339, UTC: the time the relative words count from
	Header       map[string]any  `json:"header"`                          // as decoded
	Claims       map[string]any  `json:"claims"`                          // a pid masked unless Options.ShowPID
	Times        map[string]Time `json:"times"`                           // iat, nbf, exp, when present and valid
	Lifetime     *int64          `json:"lifetime_seconds,omitempty"`      // exp - iat
	Expired      *bool           `json:"expired,omitempty"`               // exp is not after now; nil without exp
	KeyID        string          `json:"kid,omitempty"`                   // the header's kid
	Algorithm    string          `json:"alg,omitempty"`                   // the header's alg
	Certificates []Certificate   `json:"certificates"`                    // from x5c, leaf first; never nil
	AccessToken  *AccessToken    `json:"access_token,omitempty"`          // for KindAccessToken only
	Details      []Detail        `json:"authorization_details,omitempty"` // the authorization_details claim, element by element
	Signature    int             `json:"signature_bytes"`                 // the signature's length; 0 if unsigned
	Problems     []string        `json:"problems,omitempty"`              // what could not be decoded
}

// Time is a NumericDate claim.
type Time struct {
	Unix     int64  `json:"unix"`     // seconds since the epoch, a fraction cut off
	Time     string `json:"time"`     // RFC 3339, UTC
	Relative string `json:"relative"` // as Relative says it: "in 45 s", "expired 3 min ago"
}

// AccessToken sums up a Maskinporten access token.
type AccessToken struct {
	ClientID    string `json:"client_id"`              // the client the token was issued to
	Scope       string `json:"scope"`                  // the scopes granted, separated by spaces
	Consumer    string `json:"consumer,omitempty"`     // ISO 6523 ID, "0192:<orgnr>"
	ConsumerOrg string `json:"consumer_org,omitempty"` // the organisation number in it
	Supplier    string `json:"supplier,omitempty"`     // ISO 6523 ID of the supplier claim, when there is one
	ClientAMR   string `json:"client_amr,omitempty"`   // how the client authenticated, such as virksomhetssertifikat
}

// Options tunes Describe and Inspect.
type Options struct {
	Now time.Time // the time relative times count from; zero means time.Now()
	// ShowPID shows personal identification numbers (a pid claim, a
	// consent's from) in full, not only their first six digits as mp-hsm's
	// logs do (grant.MaskPID, grant.MaskParty).
	ShowPID bool
}

// Inspect decodes input (see Decode) and describes it (see Describe).
func Inspect(input string, opts Options) (*Report, error) {
	j, err := Decode(input)
	if err != nil {
		return nil, err
	}
	return Describe(j, opts), nil
}

// Describe describes j, counting relative times from opts.Now. It does not change j.
func Describe(j *JWT, opts Options) *Report {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	claims := maps.Clone(j.Claims)
	if pid, ok := claims["pid"].(string); ok && !opts.ShowPID {
		claims["pid"] = grant.MaskPID(pid)
	}
	r := &Report{
		Header: j.Header, Claims: claims, Times: map[string]Time{}, KeyID: str(j.Header, "kid"), Algorithm: str(j.Header, "alg"),
		Now: now.UTC().Format(time.RFC3339), Certificates: []Certificate{}, Signature: j.SignatureLen,
	}
	r.Kind, r.Description = kind(j)
	if v, ok := claims["authorization_details"]; ok {
		claims["authorization_details"] = r.describeDetails(v, opts.ShowPID, now)
	}
	for _, name := range []string{"iat", "nbf", "exp"} {
		v, ok := claims[name]
		if !ok {
			continue
		}
		sec, err := numericDate(v)
		if err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("claim %s: %v", name, err))
			continue
		}
		t := time.Unix(sec, 0)
		r.Times[name] = Time{Unix: sec, Time: t.UTC().Format(time.RFC3339), Relative: Relative(name, t, now)}
	}
	if exp, ok := r.Times["exp"]; ok {
		expired := !time.Unix(exp.Unix, 0).After(now)
		r.Expired = &expired
		if iat, ok := r.Times["iat"]; ok {
			l := exp.Unix - iat.Unix
			r.Lifetime = &l
		}
	}
	if v, ok := j.Header["x5c"]; ok {
		arr, ok := v.([]any)
		if !ok {
			r.Problems = append(r.Problems, "header x5c is not an array (Maskinporten answers MP-123)")
		}
		for i, el := range arr {
			r.Certificates = append(r.Certificates, describeX5CElement(i, el, now))
		}
	}
	if r.Kind == KindAccessToken {
		a := &AccessToken{ClientID: str(claims, "client_id"), Scope: str(claims, "scope"), ClientAMR: str(claims, "client_amr")}
		a.Consumer, a.ConsumerOrg = orgClaim(claims["consumer"])
		a.Supplier, _ = orgClaim(claims["supplier"])
		r.AccessToken = a
	}
	return r
}

// kind tells a Maskinporten grant, access token or Altinn token by its claims, and says it in words.
func kind(j *JWT) (kind, description string) {
	c := j.Claims
	has := func(k string) bool { _, ok := c[k]; return ok }
	for k := range c {
		if strings.HasPrefix(k, "urn:altinn:") {
			return KindAltinnToken, "Altinn token"
		}
	}
	switch {
	case has("client_id") || has("consumer") && has("token_type"):
		return KindAccessToken, "Maskinporten access token"
	case has("aud") && has("iss") && has("jti") && (has("scope") || has("authorization_details")) &&
		(j.Header["x5c"] != nil || j.Header["kid"] != nil):
		return KindGrant, "Maskinporten grant (JWT bearer grant, RFC 7523)"
	}
	return KindJWT, "JWT"
}

const maxDate = 253402300799 // NumericDates beyond year 9999 are not shown as dates

// numericDate reads a NumericDate (seconds since the epoch, a fraction cut off).
func numericDate(v any) (int64, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, errors.New("not a NumericDate (a number of seconds)")
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.Abs(f) > maxDate {
		return 0, errors.New("out of range for a date")
	}
	if i, err := n.Int64(); err == nil {
		return i, nil // exact where float64 is not
	}
	return int64(f), nil
}

// str is m[k] when it is a string, else "".
func str(m map[string]any, k string) string { s, _ := m[k].(string); return s }

// orgClaim reads an ISO 6523 organisation claim such as consumer:
// {"authority":"iso6523-actorid-upis","ID":"0192:<orgnr>"}.
func orgClaim(v any) (id, orgnr string) {
	m, _ := v.(map[string]any)
	id, _ = m["ID"].(string)
	return id, orgNumber(id)
}

// orgNumber is the organisation number in an ISO 6523 ID "0192:<orgnr>", else "".
func orgNumber(id string) string {
	if n, ok := strings.CutPrefix(id, "0192:"); ok {
		return n
	}
	return ""
}
