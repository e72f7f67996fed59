package emulator

import (
	"cmp"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// grant is a JWT grant as read from the wire, before any check that needs
// the client, a key or the clock.
type grant struct {
	alg, kid, input, iss, jti, scope string // input: the signing input, header.payload
	consumerOrg, onBehalfOf, pid     string
	sig                              []byte
	x5c                              []*x509.Certificate
	aud, authzDetails                any
	hasAuthz                         bool // authorization_details is present, even as null
	iat, exp                         time.Time
	resource                         []string
}

// allowedClaims are the claims Maskinporten documents for a JWT grant (not
// nbf, not sub); others get "400 Bad request ... Invalid assertion".
var allowedClaims = []string{
	"aud", "iss", "iat", "exp", "jti", "scope", "resource",
	"consumer_org", "iss_onbehalfof", "pid", "authorization_details",
}

// grantAlgs are the JWS algorithms of a grant Maskinporten takes.
var grantAlgs = []string{"RS256", "RS384", "RS512"}

// parseGrant reads the compact JWS with golang-jwt, without trusting it.
func parseGrant(s string) (*grant, *rejection) {
	claims := jwt.MapClaims{}
	t, parts, err := jwt.NewParser().ParseUnverified(s, claims)
	switch {
	case t == nil:
		return nil, mp("MP-011", "The assertion is not a compact JWS (three base64url parts separated by dots).")
	case errors.Is(err, jwt.ErrTokenMalformed) && t.Method == nil:
		return nil, mp("MP-011", "The JWT header or payload is not base64url-encoded JSON.")
	}
	g := &grant{input: parts[0] + "." + parts[1], sig: t.Signature}
	if r := g.readHeader(t.Header); r != nil {
		return nil, r
	}
	if err != nil || len(g.sig) == 0 { // only the signature is left to be malformed
		return nil, mp("MP-124", "The signature is not base64url.")
	}
	return g, g.readClaims(claims)
}

func (g *grant) readHeader(hdr map[string]any) *rejection {
	if g.alg, _ = hdr["alg"].(string); g.alg == "" {
		return mp("MP-011", "The JWT header has no alg.")
	}
	if !slices.Contains(grantAlgs, g.alg) {
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
		if g.kid, _ = rawKid.(string); g.kid == "" {
			return mp("MP-011", "kid must be a non-empty string.")
		}
		return nil
	}
	elems, ok := rawX5C.([]any)
	if !ok {
		return mp("MP-123", "x5c must be a JSON array of base64-encoded DER certificates, not a single string.")
	}
	if len(elems) == 0 {
		return mp("MP-123", "x5c is empty.")
	}
	for i, e := range elems {
		where := "x5c[" + strconv.Itoa(i) + "]"
		s, ok := e.(string)
		if !ok {
			return mp("MP-123", where+" is not a string.")
		}
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return mp("MP-123", where+" is not standard base64 (RFC 7515 4.1.6: not base64url, not PEM).")
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return mp("MP-123", where+" is not a DER certificate.")
		}
		g.x5c = append(g.x5c, c)
	}
	return nil
}

func (g *grant) readClaims(raw jwt.MapClaims) *rejection {
	unknown := slices.DeleteFunc(slices.Sorted(maps.Keys(raw)), func(n string) bool { return slices.Contains(allowedClaims, n) })
	if len(unknown) > 0 {
		return mp("MP-011", "Claims not allowed in a grant: "+strings.Join(unknown, ", ")+".")
	}
	str := func(name string, dst *string, required bool) *rejection {
		v, ok := raw[name]
		if !ok && required {
			return mp("MP-011", "The grant has no "+name+" claim.")
		}
		if *dst, _ = v.(string); ok && *dst == "" {
			return mp("MP-011", "Claim "+name+" must be a non-empty string.")
		}
		return nil
	}
	date := func(name string, dst *time.Time) *rejection {
		v, ok := raw[name]
		if !ok {
			return mp("MP-011", "The grant has no "+name+" claim.")
		}
		f, ok := v.(float64)
		if !ok || f < 0 || math.IsInf(f, 0) {
			return mp("MP-011", "Claim "+name+" must be a NumericDate (seconds since the epoch, a JSON number).")
		}
		sec, frac := math.Modf(f)
		*dst = time.Unix(int64(sec), int64(frac*1e9))
		return nil
	}
	if r := cmp.Or(
		str("iss", &g.iss, true),
		date("iat", &g.iat),
		date("exp", &g.exp),
		str("jti", &g.jti, true),
		str("scope", &g.scope, true),
		str("consumer_org", &g.consumerOrg, false),
		str("iss_onbehalfof", &g.onBehalfOf, false),
		str("pid", &g.pid, false),
	); r != nil {
		return r
	}
	var ok bool
	if g.aud, ok = raw["aud"]; !ok {
		return mp("MP-110", "The grant has no aud claim.")
	}
	if strings.TrimSpace(g.scope) == "" {
		return mp("MP-011", "Claim scope must list at least one scope.")
	}
	if v, ok := raw["resource"]; ok {
		list, ok := v.([]any)
		for _, e := range list {
			s, _ := e.(string)
			ok = ok && s != ""
			g.resource = append(g.resource, s)
		}
		if !ok || len(list) == 0 {
			return mp("MP-011", "Claim resource must be a JSON array of one or more non-empty strings (Maskinporten supports only the array form).")
		}
	}
	switch {
	case g.consumerOrg != "" && g.onBehalfOf != "":
		return mp("MP-011", "consumer_org and iss_onbehalfof cannot be used together.")
	case g.consumerOrg != "" && !isDigits(g.consumerOrg, 9):
		return mp("MP-011", "consumer_org must be a 9-digit organisation number.")
	case g.pid != "" && !isDigits(g.pid, 11):
		return mp("MP-011", "pid must be an 11-digit Norwegian identification number.")
	}
	g.authzDetails, g.hasAuthz = raw["authorization_details"]
	return nil
}

// audience checks the aud claim: one JSON string, the issuer with its trailing slash.
func audience(raw any, issuer, tokenURL string) *rejection {
	switch aud, ok := raw.(string); {
	case !ok:
		return mp("MP-110", "aud must be a single JSON string, not an array: exactly "+issuer+".")
	case aud == issuer:
		return nil
	case aud == tokenURL:
		return mp("MP-110", "The token endpoint URL is no longer valid as audience; use the issuer "+issuer+".")
	case aud == strings.TrimSuffix(issuer, "/"):
		return mp("MP-110", "aud lacks the issuer's trailing slash; use "+issuer+".")
	}
	return mp("MP-110", "Expected "+issuer+".")
}

const systemUserType = "urn:altinn:systemuser"

// parseAuthzDetails checks that authorization_details is a JSON array of at
// most one system user, {"type":"urn:altinn:systemuser","systemuser_org":
// {"authority":"iso6523-actorid-upis","ID":"0192:<orgnr>"}} with an optional
// externalRef, and one consent (parseConsentDetail): one party per request.
// It returns the system user's organisation ("" for none) and the consent.
func parseAuthzDetails(raw any) (sysUserOrg string, consent *Consent, rej *rejection) {
	list, ok := raw.([]any)
	if !ok || slices.ContainsFunc(list, func(e any) bool { _, ok := e.(map[string]any); return !ok }) {
		return "", nil, mp("MP-303", "authorization_details must be a JSON array of objects.")
	}
	if len(list) == 0 {
		return "", nil, mp("MP-303", "authorization_details must hold at least one element.")
	}
	for _, e := range list {
		d := e.(map[string]any)
		typ, ok := d["type"].(string)
		switch {
		case !ok:
			rej = mp("MP-301", "Each element needs a type.")
		case typ == systemUserType && sysUserOrg == "":
			sysUserOrg, rej = parseSystemUser(d)
		case typ == consentType && consent == nil:
			consent, rej = parseConsentDetail(d)
		case typ == systemUserType || typ == consentType:
			rej = mp("MP-303", "authorization_details may hold one "+typ+" element: one party per request.")
		default:
			rej = mp("MP-301", "type "+typ+" is not supported; the supported types are "+systemUserType+" and "+consentType+".")
		}
		if rej != nil {
			return "", nil, rej
		}
	}
	return sysUserOrg, consent, nil
}

// onlyFields refuses (MP-302) a member of d, the object at path, not in names.
func onlyFields(d map[string]any, path string, names ...string) *rejection {
	for name := range d {
		if !slices.Contains(names, name) {
			return mp("MP-302", "Field "+path+name+" is not known.")
		}
	}
	return nil
}

// parseSystemUser returns the organisation number of a system user element.
func parseSystemUser(d map[string]any) (string, *rejection) {
	org, _ := d["systemuser_org"].(map[string]any)
	if rej := cmp.Or(onlyFields(d, "", "type", "systemuser_org", "externalRef"), onlyFields(org, "systemuser_org.", "authority", "ID")); rej != nil {
		return "", rej
	}
	authority, _ := org["authority"].(string)
	id, _ := org["ID"].(string)
	orgnr, found := strings.CutPrefix(id, "0192:")
	if authority != "iso6523-actorid-upis" || !found || !isDigits(orgnr, 9) {
		return "", mp("MP-303", `systemuser_org must be {"authority":"iso6523-actorid-upis","ID":"0192:<9-digit organisation number>"}.`)
	}
	if ref, ok := d["externalRef"]; ok {
		if s, _ := ref.(string); s == "" {
			return "", mp("MP-303", "externalRef must be a non-empty string.")
		}
	}
	return orgnr, nil
}

// verifyChain checks the x5c chain (leaf first) against roots at now: MP-121
// for an expired certificate, MP-120 for any other fault.
func verifyChain(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) *rejection {
	for _, c := range chain {
		if now.After(c.NotAfter) {
			return mp("MP-121", "The certificate "+c.Subject.String()+" expired at "+c.NotAfter.UTC().Format(time.RFC3339)+".")
		}
		if now.Before(c.NotBefore) {
			return mp("MP-120", "The certificate "+c.Subject.String()+" is not valid before "+c.NotBefore.UTC().Format(time.RFC3339)+".")
		}
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	switch {
	case errors.As(err, new(x509.UnknownAuthorityError)):
		return mp("MP-120", "The certificate chain does not lead to a trusted root; is it a production certificate in test, or the other way round?")
	case err != nil:
		return mp("MP-120", "The certificate chain does not verify: "+err.Error()+".")
	}
	return nil
}

func isDigits(s string, n int) bool {
	return len(s) == n && !strings.ContainsFunc(s, func(r rune) bool { return r < '0' || r > '9' })
}
