package emulator

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// grant is a JWT grant as read from the wire, before any check that needs
// the client, a key or the clock.
type grant struct {
	alg    string
	kid    string
	x5c    []*x509.Certificate
	input  string // the signing input: header.payload
	sig    []byte
	claims grantClaims
}

type grantClaims struct {
	iss, jti, scope string
	aud             json.RawMessage
	iat, exp        time.Time
	resource        []string
	consumerOrg     string
	onBehalfOf      string
	pid             string
	authzDetails    json.RawMessage
}

// allowedClaims are the claims Maskinporten documents for a JWT grant (not
// nbf, not sub); others get "400 Bad request ... Invalid assertion"
// (maskinporten_protocol_jwtgrant).
var allowedClaims = []string{
	"aud", "iss", "iat", "exp", "jti", "scope", "resource",
	"consumer_org", "iss_onbehalfof", "pid", "authorization_details",
}

// parseGrant reads the compact JWS without trusting it.
func parseGrant(s string) (*grant, *rejection) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, mp("MP-011", "The assertion is not a compact JWS (three base64url parts separated by dots).")
	}
	var hdr, raw map[string]json.RawMessage
	for i, name := range []string{"header", "payload"} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(b, []*map[string]json.RawMessage{&hdr, &raw}[i]) != nil {
			return nil, mp("MP-011", "The JWT "+name+" is not base64url-encoded JSON.")
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) == 0 {
		return nil, mp("MP-124", "The signature is not base64url.")
	}
	g := &grant{input: parts[0] + "." + parts[1], sig: sig}
	if r := g.readHeader(hdr); r != nil {
		return nil, r
	}
	if r := g.claims.read(raw); r != nil {
		return nil, r
	}
	return g, nil
}

func (g *grant) readHeader(hdr map[string]json.RawMessage) *rejection {
	if err := json.Unmarshal(hdr["alg"], &g.alg); err != nil || g.alg == "" {
		return mp("MP-011", "The JWT header has no alg.")
	}
	switch g.alg {
	case "RS256", "RS384", "RS512":
	default:
		return mp("MP-124", "alg "+g.alg+" is not accepted; use RS256, RS384 or RS512.")
	}
	if _, ok := hdr["crit"]; ok {
		return mp("MP-011", "The JWT header has crit; no extension is understood.")
	}
	rawKid, hasKid := hdr["kid"]
	rawX5C, hasX5C := hdr["x5c"]
	switch {
	case hasKid && hasX5C:
		return mp("MP-011", "The JWT header has both kid and x5c; identify the key one way only.")
	case !hasKid && !hasX5C:
		return mp("MP-011", "The JWT header has neither kid nor x5c.")
	case hasKid:
		if err := json.Unmarshal(rawKid, &g.kid); err != nil || g.kid == "" {
			return mp("MP-011", "kid must be a non-empty string.")
		}
	default:
		var elems []json.RawMessage
		if err := json.Unmarshal(rawX5C, &elems); err != nil || elems == nil {
			return mp("MP-123", "x5c must be a JSON array of base64-encoded DER certificates, not a single string.")
		}
		if len(elems) == 0 {
			return mp("MP-123", "x5c is empty.")
		}
		for i, e := range elems {
			var s string
			if err := json.Unmarshal(e, &s); err != nil {
				return mp("MP-123", "x5c["+strconv.Itoa(i)+"] is not a string.")
			}
			der, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return mp("MP-123", "x5c["+strconv.Itoa(i)+"] is not standard base64 (RFC 7515 4.1.6: not base64url, not PEM).")
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return mp("MP-123", "x5c["+strconv.Itoa(i)+"] is not a DER certificate.")
			}
			g.x5c = append(g.x5c, c)
		}
	}
	return nil
}

func (c *grantClaims) read(raw map[string]json.RawMessage) *rejection {
	var unknown []string
	for name := range raw {
		if !slices.Contains(allowedClaims, name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return mp("MP-011", "Claims not allowed in a grant: "+strings.Join(unknown, ", ")+".")
	}
	str := func(name string, dst *string, required bool) *rejection {
		v, ok := raw[name]
		if !ok {
			if required {
				return mp("MP-011", "The grant has no "+name+" claim.")
			}
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil || isNull(v) || *dst == "" {
			return mp("MP-011", "Claim "+name+" must be a non-empty string.")
		}
		return nil
	}
	date := func(name string, dst *time.Time) *rejection {
		v, ok := raw[name]
		if !ok {
			return mp("MP-011", "The grant has no "+name+" claim.")
		}
		var f float64
		if err := json.Unmarshal(v, &f); err != nil || isNull(v) || f < 0 || math.IsInf(f, 0) {
			return mp("MP-011", "Claim "+name+" must be a NumericDate (seconds since the epoch, a JSON number).")
		}
		sec, frac := math.Modf(f)
		*dst = time.Unix(int64(sec), int64(frac*1e9))
		return nil
	}
	for _, r := range []*rejection{
		str("iss", &c.iss, true),
		date("iat", &c.iat),
		date("exp", &c.exp),
		str("jti", &c.jti, true),
		str("scope", &c.scope, true),
		str("consumer_org", &c.consumerOrg, false),
		str("iss_onbehalfof", &c.onBehalfOf, false),
		str("pid", &c.pid, false),
	} {
		if r != nil {
			return r
		}
	}
	aud, ok := raw["aud"]
	if !ok {
		return mp("MP-110", "The grant has no aud claim.")
	}
	c.aud = aud
	if strings.TrimSpace(c.scope) == "" {
		return mp("MP-011", "Claim scope must list at least one scope.")
	}
	if v, ok := raw["resource"]; ok {
		if err := json.Unmarshal(v, &c.resource); err != nil || c.resource == nil {
			return mp("MP-011", "Claim resource must be a JSON array of strings (Maskinporten supports only the array form).")
		}
		if len(c.resource) == 0 || slices.Contains(c.resource, "") {
			return mp("MP-011", "Claim resource must hold at least one non-empty string.")
		}
	}
	if c.consumerOrg != "" && c.onBehalfOf != "" {
		return mp("MP-011", "consumer_org and iss_onbehalfof cannot be used together.")
	}
	if c.consumerOrg != "" && !isDigits(c.consumerOrg, 9) {
		return mp("MP-011", "consumer_org must be a 9-digit organisation number.")
	}
	if c.pid != "" && !isDigits(c.pid, 11) {
		return mp("MP-011", "pid must be an 11-digit Norwegian identification number.")
	}
	if v, ok := raw["authorization_details"]; ok {
		c.authzDetails = v
	}
	return nil
}

// audience checks the aud claim: one JSON string, exactly the issuer with
// its trailing slash.
func audience(raw json.RawMessage, issuer, tokenURL string) *rejection {
	var aud string
	if err := json.Unmarshal(raw, &aud); err != nil {
		return mp("MP-110", "aud must be a single JSON string, not an array: exactly "+issuer+".")
	}
	switch aud {
	case issuer:
		return nil
	case tokenURL:
		return mp("MP-110", "The token endpoint URL is no longer valid as audience; use the issuer "+issuer+".")
	case strings.TrimSuffix(issuer, "/"):
		return mp("MP-110", "aud lacks the issuer's trailing slash; use "+issuer+".")
	}
	return mp("MP-110", "Expected "+issuer+".")
}

// systemUserRequest is one element of authorization_details of type
// urn:altinn:systemuser.
type systemUserRequest struct {
	org         string // the customer's 9-digit org number
	externalRef string
}

const systemUserType = "urn:altinn:systemuser"

// authzRequest is what a grant's authorization_details ask for: a system
// user, a consent, or both.
type authzRequest struct {
	sysUser *systemUserRequest
	consent *consentRequest
}

// parseAuthzDetails checks that authorization_details is a JSON array of at
// most one system user, {"type":"urn:altinn:systemuser","systemuser_org":
// {"authority":"iso6523-actorid-upis","ID":"0192:<orgnr>"}} with an optional
// externalRef, and one consent (parseConsentDetail): one party per request.
func parseAuthzDetails(raw json.RawMessage) (*authzRequest, *rejection) {
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil || list == nil {
		return nil, mp("MP-303", "authorization_details must be a JSON array of objects.")
	}
	if len(list) == 0 {
		return nil, mp("MP-303", "authorization_details must hold at least one element.")
	}
	req := &authzRequest{}
	for _, d := range list {
		var typ string
		if err := json.Unmarshal(d["type"], &typ); err != nil {
			return nil, mp("MP-301", "Each element needs a type.")
		}
		switch typ {
		case systemUserType:
			if req.sysUser != nil {
				return nil, mp("MP-303", "authorization_details may hold one "+systemUserType+" element: one party per request.")
			}
			su, rej := parseSystemUser(d)
			if rej != nil {
				return nil, rej
			}
			req.sysUser = su
		case consentType:
			if req.consent != nil {
				return nil, mp("MP-303", "authorization_details may hold one "+consentType+" element: one party per request.")
			}
			c, rej := parseConsentDetail(d)
			if rej != nil {
				return nil, rej
			}
			req.consent = &c
		default:
			return nil, mp("MP-301", "type "+typ+" is not supported; the supported types are "+systemUserType+" and "+consentType+".")
		}
	}
	return req, nil
}

// onlyFields refuses a member of d that is not one of names (MP-302).
func onlyFields(d map[string]json.RawMessage, typ string, names ...string) *rejection {
	for name := range d {
		if !slices.Contains(names, name) {
			return mp("MP-302", "Field "+name+" is not known for "+typ+".")
		}
	}
	return nil
}

func parseSystemUser(d map[string]json.RawMessage) (*systemUserRequest, *rejection) {
	if rej := onlyFields(d, systemUserType, "type", "systemuser_org", "externalRef"); rej != nil {
		return nil, rej
	}
	rawOrg, ok := d["systemuser_org"]
	if !ok {
		return nil, mp("MP-303", "systemuser_org is missing.")
	}
	var org map[string]json.RawMessage
	if err := json.Unmarshal(rawOrg, &org); err != nil || org == nil {
		return nil, mp("MP-303", "systemuser_org must be an object {\"authority\",\"ID\"}.")
	}
	for name := range org {
		if name != "authority" && name != "ID" {
			return nil, mp("MP-302", "Field systemuser_org."+name+" is not known.")
		}
	}
	var authority, id string
	if err := json.Unmarshal(org["authority"], &authority); err != nil || authority != "iso6523-actorid-upis" {
		return nil, mp("MP-303", "systemuser_org.authority must be iso6523-actorid-upis.")
	}
	if err := json.Unmarshal(org["ID"], &id); err != nil {
		return nil, mp("MP-303", "systemuser_org.ID must be a string 0192:<organisation number>.")
	}
	orgnr, found := strings.CutPrefix(id, "0192:")
	if !found || !isDigits(orgnr, 9) {
		return nil, mp("MP-303", "systemuser_org.ID "+id+" is not of the form 0192:<9-digit organisation number>.")
	}
	req := &systemUserRequest{org: orgnr}
	if v, ok := d["externalRef"]; ok {
		if err := json.Unmarshal(v, &req.externalRef); err != nil || req.externalRef == "" {
			return nil, mp("MP-303", "externalRef must be a non-empty string.")
		}
	}
	return req, nil
}

func isNull(v json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(v), []byte("null")) }
