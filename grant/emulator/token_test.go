package emulator_test

import (
	"crypto"
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
)

var traceRE = regexp.MustCompile(` \(trace_id: [0-9a-f]{32}\)$`)

// TestRejections reaches every refusal of /token with a grant wrong in one
// way, and checks the status, the OAuth error and the MP code.
func TestRejections(t *testing.T) {
	e := newEnv(t)
	p := e.pki
	type tc struct {
		name       string
		send       func() *answer
		status     int
		err, code  string
		descSubstr string
	}
	// grant mutates a valid x5c grant and posts it.
	grant := func(mut func(*spec)) func() *answer {
		return func() *answer {
			s := e.x5cGrant()
			mut(s)
			return e.post(s.sign(t))
		}
	}
	kid := func(mut func(*spec)) func() *answer {
		return func() *answer {
			s := e.kidGrant()
			mut(s)
			return e.post(s.sign(t))
		}
	}
	raw := func(method, ctype, body string) func() *answer {
		return func() *answer { return e.do(method, ctype, body) }
	}
	valid := func() string { return e.x5cGrant().sign(t) }
	const formCT = "application/x-www-form-urlencoded"
	const bad = http.StatusBadRequest
	now := e.clock.Now()

	cases := []tc{
		// The request.
		{"GET", raw(http.MethodGet, "", ""), http.StatusMethodNotAllowed, "invalid_request", "", "POST"},
		{"JSON body", raw(http.MethodPost, "application/json", `{"grant_type":"x"}`), bad, "invalid_request", "", "Content-Type"},
		{"no content type", raw(http.MethodPost, "", form(valid()).Encode()), bad, "invalid_request", "", "Content-Type"},
		{"no grant_type", raw(http.MethodPost, formCT, url.Values{"assertion": {valid()}}.Encode()), bad, "invalid_request", "", "grant_type"},
		{"client_credentials", raw(http.MethodPost, formCT, url.Values{"grant_type": {"client_credentials"}, "assertion": {valid()}}.Encode()), bad, "unsupported_grant_type", "", ""},
		{"no assertion", raw(http.MethodPost, formCT, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}}.Encode()), bad, "invalid_request", "", "assertion"},
		{"grant_type twice", raw(http.MethodPost, formCT, form(valid()).Encode()+"&grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"), bad, "invalid_request", "", "more than once"},
		{"not a JWT", func() *answer { return e.post("not-a-jwt") }, bad, "invalid_request", "MP-011", "compact JWS"},
		{"header not JSON", func() *answer { return e.post("bm90.e30.c2ln") }, bad, "invalid_request", "MP-011", "header"},

		// The header.
		{"alg HS256", grant(func(s *spec) { s.method, s.key = jwt.SigningMethodHS256, []byte("secret-secret-secret-secret-32by") }), bad, "invalid_grant", "MP-124", "HS256"},
		{"alg PS256", grant(func(s *spec) { s.method = jwt.SigningMethodPS256 }), bad, "invalid_grant", "MP-124", "PS256"},
		{"alg none", func() *answer {
			s := e.x5cGrant()
			s.method, s.key = jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType
			return e.post(s.sign(t) + "AA")
		}, bad, "invalid_grant", "MP-124", "none"},
		{"both kid and x5c", grant(func(s *spec) { s.header["kid"] = "key-1" }), bad, "invalid_request", "MP-011", "both kid and x5c"},
		{"neither kid nor x5c", grant(func(s *spec) { s.header["x5c"] = nil }), bad, "invalid_request", "MP-011", "neither"},
		{"crit", grant(func(s *spec) { s.header["crit"] = []string{"exp"} }), bad, "invalid_request", "MP-011", "crit"},
		{"x5c a string", grant(func(s *spec) { s.header["x5c"] = x5c(p.leaf)[0] }), bad, "invalid_grant", "MP-123", "array"},
		{"x5c empty", grant(func(s *spec) { s.header["x5c"] = []string{} }), bad, "invalid_grant", "MP-123", "empty"},
		{"x5c of numbers", grant(func(s *spec) { s.header["x5c"] = []int{1} }), bad, "invalid_grant", "MP-123", "not a string"},
		{"x5c base64url", grant(func(s *spec) {
			// A DER certificate of this size is sure to hold + or / in base64.
			s.header["x5c"] = []string{base64.RawURLEncoding.EncodeToString(p.leaf.Raw)}
		}), bad, "invalid_grant", "MP-123", "standard base64"},
		{"x5c not DER", grant(func(s *spec) { s.header["x5c"] = []string{base64.StdEncoding.EncodeToString([]byte("hello"))} }), bad, "invalid_grant", "MP-123", "DER"},

		// Claims of the wrong shape or not allowed.
		{"nbf", grant(func(s *spec) { s.claims["nbf"] = now.Unix() }), bad, "invalid_request", "MP-011", "nbf"},
		{"sub", grant(func(s *spec) { s.claims["sub"] = "client-a" }), bad, "invalid_request", "MP-011", "sub"},
		{"no iss", grant(func(s *spec) { s.claims["iss"] = nil }), bad, "invalid_request", "MP-011", "iss"},
		{"no jti", grant(func(s *spec) { s.claims["jti"] = nil }), bad, "invalid_request", "MP-011", "jti"},
		{"no scope", grant(func(s *spec) { s.claims["scope"] = nil }), bad, "invalid_request", "MP-011", "scope"},
		{"blank scope", grant(func(s *spec) { s.claims["scope"] = "  " }), bad, "invalid_request", "MP-011", "scope"},
		{"iat a string", grant(func(s *spec) { s.claims["iat"] = "now" }), bad, "invalid_request", "MP-011", "iat"},
		{"no exp", grant(func(s *spec) { s.claims["exp"] = nil }), bad, "invalid_request", "MP-011", "exp"},
		{"resource a string", grant(func(s *spec) { s.claims["resource"] = "https://api.example/" }), bad, "invalid_request", "MP-011", "array"},
		{"resource empty", grant(func(s *spec) { s.claims["resource"] = []string{} }), bad, "invalid_request", "MP-011", "resource"},
		{"consumer_org and iss_onbehalfof", grant(func(s *spec) {
			s.claims["consumer_org"], s.claims["iss_onbehalfof"] = orgDelegate, "sub-client"
		}), bad, "invalid_request", "MP-011", "together"},
		{"consumer_org of 8 digits", grant(func(s *spec) { s.claims["consumer_org"] = "93000000" }), bad, "invalid_request", "MP-011", "9-digit"},
		{"pid of 10 digits", grant(func(s *spec) { s.claims["pid"] = "0101901234" }), bad, "invalid_request", "MP-011", "11-digit"},

		// The client and its key.
		{"unknown client", grant(func(s *spec) { s.claims["iss"] = "nobody" }), bad, "invalid_grant", "MP-100", "Client authentication failed"},
		{"unknown kid", kid(func(s *spec) { s.header["kid"] = "key-9" }), bad, "invalid_grant", "", "Unknown key identifier (kid) for client"},
		{"untrusted root", grant(func(s *spec) { s.header["x5c"] = x5c(p.strayLeaf, p.strayRoot) }), bad, "invalid_grant", "MP-120", "trusted root"},
		{"intermediate missing", grant(func(s *spec) { s.header["x5c"] = x5c(p.leaf) }), bad, "invalid_grant", "MP-120", "invalid certificate"},
		{"certificate expired", grant(func(s *spec) { s.header["x5c"] = x5c(p.expired, p.inter) }), bad, "invalid_grant", "MP-121", "Expired key"},
		{"certificate not yet valid", grant(func(s *spec) { s.header["x5c"] = x5c(p.notYet, p.inter) }), bad, "invalid_grant", "MP-120", "not valid before"},
		{"another org's certificate", grant(func(s *spec) { s.header["x5c"] = x5c(p.leafOther, p.inter) }), bad, "invalid_grant", "MP-122", "Client orgno " + orgA + " does not match certificate orgno " + orgOther},
		{"certificate without org", grant(func(s *spec) { s.header["x5c"] = x5c(p.leafNoOrg, p.inter) }), bad, "invalid_grant", "MP-122", "no organisation number"},
		{"signed by another key", grant(func(s *spec) { s.key = key(kOther) }), bad, "invalid_grant", "MP-124", "does not verify"},
		{"RS512 signature claimed as RS256", func() *answer {
			s := e.x5cGrant()
			s.method = jwt.SigningMethodRS512
			parts := strings.Split(s.sign(t), ".")
			hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","x5c":["` + x5c(p.leaf)[0] + `","` + x5c(p.inter)[0] + `"]}`))
			return e.post(hdr + "." + parts[1] + "." + parts[2])
		}, bad, "invalid_grant", "MP-124", "does not verify"},
		{"kid grant signed by another key", kid(func(s *spec) { s.key = key(kLeaf) }), bad, "invalid_grant", "MP-124", "does not verify"},

		// The audience.
		{"aud of another environment", grant(func(s *spec) { s.claims["aud"] = "https://maskinporten.no/" }), bad, "invalid_grant", "MP-110", "Invalid JWT claim aud"},
		{"aud the token endpoint", grant(func(s *spec) { s.claims["aud"] = e.srv.TokenURL() }), bad, "invalid_grant", "MP-110", "token endpoint"},
		{"aud without trailing slash", grant(func(s *spec) { s.claims["aud"] = e.srv.URL }), bad, "invalid_grant", "MP-110", "trailing slash"},
		{"aud an array", grant(func(s *spec) { s.claims["aud"] = []string{e.srv.Issuer()} }), bad, "invalid_grant", "MP-110", "not an array"},
		{"no aud", grant(func(s *spec) { s.claims["aud"] = nil }), bad, "invalid_grant", "MP-110", "no aud"},

		// Time.
		{"iat 11s ahead", grant(func(s *spec) {
			s.claims["iat"], s.claims["exp"] = now.Add(11*time.Second).Unix(), now.Add(60*time.Second).Unix()
		}), bad, "invalid_grant", "", "Issue time is after now"},
		{"lifetime 121s", grant(func(s *spec) { s.claims["exp"] = now.Add(121 * time.Second).Unix() }), bad, "invalid_grant", "MP-130", "too long lifetime"},
		{"exp before iat", grant(func(s *spec) { s.claims["exp"] = now.Add(-time.Second).Unix() }), bad, "invalid_grant", "MP-130", "not after iat"},
		{"expired 11s ago", grant(func(s *spec) {
			s.claims["iat"], s.claims["exp"] = now.Add(-71*time.Second).Unix(), now.Add(-11*time.Second).Unix()
		}), bad, "invalid_grant", "MP-130", "JWT is expired"},

		// What is asked for.
		{"consumer_org is the client's own", grant(func(s *spec) { s.claims["consumer_org"] = orgA }), bad, "invalid_request", "", "consumer_org"},
		{"consumer_org never delegated", grant(func(s *spec) { s.claims["consumer_org"] = orgOther }), http.StatusForbidden, "access_denied", "MP-251",
			"Consumer " + orgOther + " has not delegated access to the scope test:read to supplier " + orgA},
		{"authorization_details not an array", grant(func(s *spec) { s.claims["authorization_details"] = map[string]any{"type": "urn:altinn:systemuser"} }), bad, "invalid_authorization_details", "MP-303", "array"},
		{"authorization_details of unknown type", grant(func(s *spec) {
			s.claims["authorization_details"] = []any{map[string]any{"type": "urn:example:unknown"}}
		}), bad, "invalid_authorization_details", "MP-301", "urn:example:unknown"},
		{"authorization_details with unknown field", grant(func(s *spec) {
			s.claims["authorization_details"] = []any{map[string]any{"type": "urn:altinn:systemuser", "systemuser_org": sysOrg(orgSysUser), "party": "x"}}
		}), bad, "invalid_authorization_details", "MP-302", "party"},
		{"systemuser_org with lowercase id", grant(func(s *spec) {
			s.claims["authorization_details"] = []any{map[string]any{"type": "urn:altinn:systemuser", "systemuser_org": map[string]string{"authority": "iso6523-actorid-upis", "id": "0192:" + orgSysUser}}}
		}), bad, "invalid_authorization_details", "MP-302", "systemuser_org.id"},
		{"systemuser_org without 0192", grant(func(s *spec) {
			s.claims["authorization_details"] = []any{map[string]any{"type": "urn:altinn:systemuser", "systemuser_org": map[string]string{"authority": "iso6523-actorid-upis", "ID": orgSysUser}}}
		}), bad, "invalid_authorization_details", "MP-303", "0192:"},
		{"two parties", grant(func(s *spec) {
			d := map[string]any{"type": "urn:altinn:systemuser", "systemuser_org": sysOrg(orgSysUser)}
			s.claims["authorization_details"] = []any{d, d}
		}), bad, "invalid_authorization_details", "MP-303", "one party"},
		{"no system user", grant(func(s *spec) {
			s.claims["authorization_details"] = []any{map[string]any{"type": "urn:altinn:systemuser", "systemuser_org": sysOrg(orgOther)}}
		}), bad, "invalid_authorization_details", "MP-303", orgOther},
		{"scope not on client", grant(func(s *spec) { s.claims["scope"] = "test:read other:admin" }), bad, "invalid_scope", "MP-200", "invalid scopes for client, other:admin"},
		{"scope case differs", grant(func(s *spec) { s.claims["scope"] = "Test:Read" }), bad, "invalid_scope", "MP-200", "Test:Read"},
		{"user-login scope", grant(func(s *spec) { s.claims["scope"] = "openid test:read" }), bad, "invalid_scope", "MP-201", "openid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := c.send()
			if a.status != c.status || a.Error != c.err || a.code() != c.code {
				t.Fatalf("got %d %s %q, error_uri %q; want %d %s %s", a.status, a.Error, a.Description, a.URI, c.status, c.err, c.code)
			}
			if !strings.Contains(a.Description, c.descSubstr) {
				t.Errorf("error_description %q does not contain %q", a.Description, c.descSubstr)
			}
			if !traceRE.MatchString(a.Description) {
				t.Errorf("error_description %q does not end with a trace_id", a.Description)
			}
			if c.code != "" && a.URI != e.srv.Issuer()+"errors/"+c.code {
				t.Errorf("error_uri = %q", a.URI)
			}
			if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q", ct)
			}
			if a.header.Get("Date") == "" {
				t.Error("no Date header")
			}
			if a.AccessToken != "" {
				t.Error("a refusal carries an access token")
			}
		})
	}
	st := e.srv.Stats()
	if st.Issued != 0 || st.Rejected["MP-124"] != 6 || st.Rejected["MP-011"] == 0 || st.Rejected["invalid_grant"] != 2 {
		t.Errorf("Stats = %+v", st)
	}
}

func sysOrg(org string) map[string]string {
	return map[string]string{"authority": "iso6523-actorid-upis", "ID": "0192:" + org}
}

func TestIssueX5C(t *testing.T) {
	e := newEnv(t)
	a, claims := e.mustIssue(e.x5cGrant().sign(t))
	if a.TokenType != "Bearer" || a.ExpiresIn != 120 || a.Scope != "test:read" {
		t.Errorf("answer = %+v", a)
	}
	if cc := a.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q", cc)
	}
	want := map[string]any{
		"iss":        e.srv.Issuer(),
		"client_id":  "client-a",
		"client_amr": "virksomhetssertifikat",
		"token_type": "Bearer",
		"scope":      "test:read",
		"iat":        float64(t0.Unix()),
		"exp":        float64(t0.Add(120 * time.Second).Unix()),
	}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	if c := claims["consumer"].(map[string]any); c["authority"] != "iso6523-actorid-upis" || c["ID"] != "0192:"+orgA {
		t.Errorf("consumer = %v", c)
	}
	if jti, _ := claims["jti"].(string); len(jti) < 20 {
		t.Errorf("jti = %q", jti)
	}
	for _, k := range []string{"aud", "supplier", "pid", "authorization_details"} {
		if _, ok := claims[k]; ok {
			t.Errorf("unasked claim %s = %v", k, claims[k])
		}
	}
}

func TestIssueVariants(t *testing.T) {
	e := newEnv(t)
	t.Run("kid", func(t *testing.T) {
		_, claims := e.mustIssue(e.kidGrant().sign(t))
		if claims["client_amr"] != "private_key_jwt" || claims["client_id"] != "client-k" {
			t.Errorf("claims = %v", claims)
		}
	})
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodRS384, jwt.SigningMethodRS512} {
		t.Run(m.Alg(), func(t *testing.T) {
			s := e.x5cGrant()
			s.method = m
			e.mustIssue(s.sign(t))
		})
	}
	t.Run("SEID 1 serialNumber", func(t *testing.T) {
		s := e.x5cGrant()
		s.header["x5c"] = x5c(e.pki.leafSEID1, e.pki.inter)
		e.mustIssue(s.sign(t))
	})
	t.Run("chain with root", func(t *testing.T) {
		s := e.x5cGrant()
		s.header["x5c"] = x5c(e.pki.leaf, e.pki.inter, e.pki.root)
		e.mustIssue(s.sign(t))
	})
	t.Run("no typ", func(t *testing.T) {
		s := e.x5cGrant()
		s.header["typ"] = nil
		e.mustIssue(s.sign(t))
	})
	t.Run("two scopes", func(t *testing.T) {
		s := e.x5cGrant()
		s.claims["scope"] = "test:read test:write"
		a, claims := e.mustIssue(s.sign(t))
		if a.Scope != "test:read test:write" || claims["scope"] != "test:read test:write" {
			t.Errorf("scope = %q, claim %v", a.Scope, claims["scope"])
		}
	})
	t.Run("one resource", func(t *testing.T) {
		s := e.x5cGrant()
		s.claims["resource"] = []string{"https://api.example/"}
		_, claims := e.mustIssue(s.sign(t))
		if claims["aud"] != "https://api.example/" {
			t.Errorf("aud = %v", claims["aud"])
		}
	})
	t.Run("two resources", func(t *testing.T) {
		s := e.x5cGrant()
		s.claims["resource"] = []string{"https://a.example/", "https://b.example/"}
		_, claims := e.mustIssue(s.sign(t))
		if aud, _ := claims["aud"].([]any); len(aud) != 2 {
			t.Errorf("aud = %v", claims["aud"])
		}
	})
	t.Run("consumer_org", func(t *testing.T) {
		s := e.x5cGrant()
		s.claims["consumer_org"] = orgDelegate
		_, claims := e.mustIssue(s.sign(t))
		if c := claims["consumer"].(map[string]any); c["ID"] != "0192:"+orgDelegate {
			t.Errorf("consumer = %v", c)
		}
		if c := claims["supplier"].(map[string]any); c["ID"] != "0192:"+orgA {
			t.Errorf("supplier = %v", c)
		}
	})
	t.Run("iss_onbehalfof", func(t *testing.T) {
		s := e.x5cGrant()
		s.claims["iss_onbehalfof"] = "sub-client"
		e.mustIssue(s.sign(t))
	})
	t.Run("pid", func(t *testing.T) {
		s := e.x5cGrant()
		s.claims["pid"] = "01019012345"
		if _, claims := e.mustIssue(s.sign(t)); claims["pid"] != "01019012345" {
			t.Errorf("pid = %v", claims["pid"])
		}
	})
	t.Run("system user", func(t *testing.T) {
		s := e.x5cGrant()
		s.claims["authorization_details"] = []any{map[string]any{
			"type": "urn:altinn:systemuser", "systemuser_org": sysOrg(orgSysUser), "externalRef": "ref-1",
		}}
		_, claims := e.mustIssue(s.sign(t))
		ad, _ := claims["authorization_details"].([]any)
		if len(ad) != 1 {
			t.Fatalf("authorization_details = %v", claims["authorization_details"])
		}
		d := ad[0].(map[string]any)
		if d["type"] != "urn:altinn:systemuser" || d["systemuser_org"].(map[string]any)["ID"] != "0192:"+orgSysUser ||
			len(d["systemuser_id"].([]any)) != 1 || d["system_id"] != orgA+"_client-a" {
			t.Errorf("authorization_details = %v", d)
		}
		if c := claims["consumer"].(map[string]any); c["ID"] != "0192:"+orgA {
			t.Errorf("consumer = %v, want the supplier", c)
		}
	})
	t.Run("clock skew tolerated", func(t *testing.T) {
		now := e.clock.Now()
		s := e.x5cGrant()
		s.claims["iat"], s.claims["exp"] = now.Add(9*time.Second).Unix(), now.Add(60*time.Second).Unix()
		e.mustIssue(s.sign(t))
		s = e.x5cGrant()
		s.claims["iat"], s.claims["exp"] = now.Add(-100*time.Second).Unix(), now.Add(-9*time.Second).Unix()
		e.mustIssue(s.sign(t))
	})
}

func TestGrantUsedBefore(t *testing.T) {
	e := newEnv(t)
	g := e.x5cGrant().sign(t)
	e.mustIssue(g)
	a := e.post(g)
	if a.status != http.StatusBadRequest || a.Error != "invalid_grant" || a.code() != "MP-012" ||
		!strings.HasPrefix(a.Description, "Grant is used before.") {
		t.Fatalf("reuse: got %d %s %q %s", a.status, a.Error, a.Description, a.code())
	}
	// The same jti in a grant signed anew is still a reuse.
	s := e.x5cGrant()
	s.claims["jti"] = "fixed"
	e.mustIssue(s.sign(t))
	s.claims["iat"], s.claims["exp"] = e.clock.Now().Unix()-1, e.clock.Now().Unix()+60
	if a := e.post(s.sign(t)); a.code() != "MP-012" {
		t.Fatalf("same jti, new grant: %s %q", a.code(), a.Description)
	}
	st := e.srv.Stats()
	if st.Issued != 2 || st.JTIs != 2 || st.Rejected["MP-012"] != 2 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestConfigIssuer(t *testing.T) {
	e := newEnv(t, func(c *emulator.Config) {
		c.Issuer = "https://test.maskinporten.no/"
		c.TokenLifetime = 599 * time.Second
	})
	if e.srv.Issuer() != "https://test.maskinporten.no/" {
		t.Fatalf("Issuer() = %q", e.srv.Issuer())
	}
	a, claims := e.mustIssue(e.x5cGrant().sign(t))
	if a.ExpiresIn != 599 || claims["iss"] != "https://test.maskinporten.no/" {
		t.Errorf("expires_in %d, iss %v", a.ExpiresIn, claims["iss"])
	}
	s := e.x5cGrant()
	s.claims["aud"] = e.srv.URL + "/"
	if a := e.post(s.sign(t)); a.URI != "https://test.maskinporten.no/errors/MP-110" {
		t.Errorf("error_uri = %q", a.URI)
	}
}

func TestAddClientWhileRunning(t *testing.T) {
	e := newEnv(t)
	s := e.x5cGrant()
	s.claims["iss"] = "client-new"
	if a := e.post(s.sign(t)); a.code() != "MP-100" {
		t.Fatalf("before AddClient: %s", a.code())
	}
	e.srv.AddClient(emulator.Client{ID: "client-new", OrgNumber: orgA, Scopes: []string{"test:read"}})
	s.claims["jti"] = "another"
	e.mustIssue(s.sign(t))
}

func TestNoRootsRefusesX5C(t *testing.T) {
	e := newEnv(t, func(c *emulator.Config) { c.Roots = nil })
	if a := e.post(e.x5cGrant().sign(t)); a.code() != "MP-120" {
		t.Fatalf("got %s %q", a.code(), a.Description)
	}
	e.mustIssue(e.kidGrant().sign(t))
}

func TestRegisteredKeyForms(t *testing.T) {
	e := newEnv(t)
	e.srv.AddClient(emulator.Client{ID: "client-forms", OrgNumber: orgA, Scopes: []string{"test:read"},
		Keys: map[string]crypto.PublicKey{"cert": e.pki.leaf, "value": key(kOther).PublicKey}})
	for kid, k := range map[string]any{"cert": key(kLeaf), "value": key(kOther)} {
		s := e.kidGrant()
		s.header["kid"], s.claims["iss"], s.key = kid, "client-forms", k
		e.mustIssue(s.sign(t))
	}
}
