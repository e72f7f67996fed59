package daemon

import (
	"errors"
	"mime"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mp-hsm/mp-hsm/grant"
)

// tokenRequest is a parsed request and its cache key.
type tokenRequest struct {
	req     grant.Request
	details []grant.AuthorizationDetail // of req.AuthorizationDetails, for the audit trail
	altinn  bool
	key     []byte // "mp" or "altinn", then the fields, separated by NUL
}

// mpKey is the key of the request's Maskinporten token.
func (tr *tokenRequest) mpKey() string {
	_, rest, _ := strings.Cut(string(tr.key), "\x00")
	return "mp\x00" + rest
}

// isForm reports whether ct is application/x-www-form-urlencoded.
func isForm(ct string) bool {
	if ct == "application/x-www-form-urlencoded" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/x-www-form-urlencoded"
}

// parseRequest checks a client-credentials form, applies the scope and
// resource policies, and builds the cache key into buf. Scopes and
// resources are deduplicated and sorted, so that the same set always makes
// the same key and the same grant. The claims are validated by validate,
// which is only needed for a key that is not yet in the cache.
//
// The key starts with the kind ("mp" or "altinn") and the client's name.
func parseRequest(form url.Values, cl *client, resPolicy *listPolicy, buf []byte) (*tokenRequest, error) {
	policy := cl.policy
	for _, name := range []string{"grant_type", "scope", "consumer_org", "pid", "system_user_org", "authorization_details", "altinn", "client_id", "client_secret"} {
		if len(form[name]) > 1 {
			return nil, badRequest(errInvalidRequest, "the parameter "+name+" is given more than once")
		}
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		return nil, badRequest(errInvalidRequest, "grant_type is missing; use client_credentials")
	default:
		return nil, badRequest(errUnsupportedGrantType, "grant_type "+strconv.Quote(excerpt(gt))+" is not supported; use client_credentials")
	}
	raw := form.Get("scope")
	scopes := make([]string, 0, 4)
	for sc := range strings.SplitSeq(raw, " ") {
		if sc == "" {
			continue
		}
		if !grant.ValidScope(sc) {
			return nil, badRequest(errInvalidScope, "the scope "+strconv.Quote(excerpt(sc))+" holds characters a scope cannot hold")
		}
		if !policy.allows(sc) {
			if cl.anyUnix {
				return nil, badRequest(errInvalidScope, "the scope "+strconv.Quote(excerpt(sc))+" is not allowed by this daemon (--allowed-scopes)")
			}
			return nil, badRequest(errInvalidScope, "the scope "+strconv.Quote(excerpt(sc))+" is not allowed for the client '"+cl.Name+"' (its scopes)")
		}
		scopes = append(scopes, sc)
	}
	if len(scopes) == 0 {
		return nil, badRequest(errInvalidScope, "scope is missing: give the scopes to ask Maskinporten for, separated by spaces")
	}
	if len(scopes) > 1 {
		slices.Sort(scopes)
		scopes = slices.Compact(scopes)
	}
	resources := form["resource"]
	for _, res := range resources {
		if !resPolicy.allows(res) {
			return nil, badRequest(errInvalidTarget, "the resource '"+excerpt(res)+"' is not allowed by this daemon (--allowed-resources)")
		}
	}
	if len(resources) > 1 {
		resources = slices.Clone(resources)
		slices.Sort(resources)
		resources = slices.Compact(resources)
	}
	tr := &tokenRequest{req: grant.Request{
		Scopes:        scopes,
		Resources:     resources,
		ConsumerOrg:   form.Get("consumer_org"),
		PID:           form.Get("pid"),
		SystemUserOrg: form.Get("system_user_org"),
	}}
	if raw := form.Get("authorization_details"); raw != "" {
		if err := tr.authorizationDetails(raw, cl); err != nil {
			return nil, err
		}
	}
	switch v := form.Get("altinn"); v {
	case "", "false", "0":
		buf = append(buf, "mp"...)
	case "true", "1":
		tr.altinn = true
		buf = append(buf, "altinn"...)
	default:
		return nil, badRequest(errInvalidRequest, "altinn must be true or false, not "+strconv.Quote(excerpt(v)))
	}
	buf = append(buf, 0)
	buf = append(buf, cl.Name...)
	for _, list := range [][]string{scopes, resources} {
		buf = append(buf, 0)
		for i, v := range list {
			if i > 0 {
				buf = append(buf, ' ')
			}
			buf = append(buf, v...)
		}
	}
	for _, v := range []string{tr.req.ConsumerOrg, tr.req.PID, tr.req.SystemUserOrg} {
		buf = append(buf, 0)
		buf = append(buf, v...)
	}
	buf = append(buf, 0)
	buf = append(buf, tr.req.AuthorizationDetails...)
	tr.key = buf
	return tr, nil
}

// authorizationDetails checks the authorization_details parameter (RFC
// 9396) with grant.ParseAuthorizationDetails, and that the client's
// authorization-types list each element's type: none are allowed unless
// listed.
func (tr *tokenRequest) authorizationDetails(raw string, cl *client) error {
	details, err := grant.ParseAuthorizationDetails([]byte(raw))
	if err != nil {
		var ve *grant.ValidationError
		if errors.As(err, &ve) {
			return badRequest(errInvalidAuthzDetails, "invalid authorization_details: "+ve.Reason)
		}
		return badRequest(errInvalidAuthzDetails, "invalid authorization_details")
	}
	for _, d := range details {
		if !cl.authzTypes[d.Type] {
			if cl.anyUnix {
				return badRequest(errInvalidAuthzDetails, "authorization_details of type "+strconv.Quote(excerpt(d.Type))+" is not allowed: a daemon without [[client]] tables allows none")
			}
			return badRequest(errInvalidAuthzDetails, "authorization_details of type "+strconv.Quote(excerpt(d.Type))+" is not allowed for the client '"+cl.Name+"' (its authorization-types)")
		}
	}
	tr.req.AuthorizationDetails = []byte(raw)
	tr.details = details
	return nil
}

// validate checks the claims as grant.Request.Validate does, as OAuth 2
// errors.
func (tr *tokenRequest) validate() error {
	for _, res := range tr.req.Resources {
		if strings.ContainsRune(res, 0) {
			return badRequest(errInvalidRequest, "invalid resource")
		}
	}
	err := tr.req.Validate()
	if err == nil {
		return nil
	}
	var ve *grant.ValidationError
	if errors.As(err, &ve) {
		code := errInvalidRequest
		if ve.Field == "scope" {
			code = errInvalidScope
		}
		field := ve.Field
		switch field {
		case "systemuser_org":
			field = "system_user_org"
		case "authorization_details":
			code = errInvalidAuthzDetails
		}
		return badRequest(code, "invalid "+field+": "+ve.Reason)
	}
	return badRequest(errInvalidRequest, err.Error())
}

// Bounds on a caller's values where the daemon repeats them: error
// descriptions and the audit log.
const (
	maxCallerValue  = 100 // bytes of one value (a scope, a resource, grant_type, ...)
	maxCallerValues = 20  // values of a list (scopes, resources)
)

// excerpt is the bound on a caller's value wherever the daemon repeats
// it (an error description, the audit log): at most maxCallerValue bytes.
func excerpt(v string) string { return shorten(v, maxCallerValue) }

// shorten returns v cut to at most n bytes, at the start of a UTF-8
// character, and "..." after a cut.
func shorten(v string, n int) string {
	if len(v) <= n {
		return v
	}
	for n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	return v[:n] + "..."
}
