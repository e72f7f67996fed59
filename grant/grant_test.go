package grant

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/signer"
)

// decodeJWT splits a compact JWS and checks its RS256 signature with the
// public key of key i.
func decodeJWT(t *testing.T, s string, p *testPKI, i int) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		t.Fatalf("grant has %d parts", len(parts))
	}
	for j, v := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[j])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	if err := signer.RS256.Verify(parts[0]+"."+parts[1], sig, p.keys[i].Public()); err != nil {
		t.Fatalf("signature: %v", err)
	}
	return header, claims
}

func keysOf(m map[string]any) []string {
	return slices.Sorted(maps.Keys(m))
}

func TestGrantX5C(t *testing.T) {
	p := thePKI(t)
	clk := newFakeClock()
	cfg := &Config{ClientID: "client-1", Signer: p.x5cSigner(t, 0), Environment: Test, now: clk.Now}
	g, err := cfg.Grant(Request{Scopes: []string{"b:x a:y", "a:y"}})
	if err != nil {
		t.Fatal(err)
	}
	h, c := decodeJWT(t, g, p, 0)
	if got, want := keysOf(h), []string{"alg", "x5c"}; !slices.Equal(got, want) {
		t.Errorf("header keys = %q, want %q", got, want)
	}
	x5c, _ := h["x5c"].([]any)
	if len(x5c) != 2 {
		t.Fatalf("x5c = %v, want two certificates", h["x5c"])
	}
	for i, want := range [][]byte{p.leaves[0].Raw, p.root.Raw} {
		der, err := base64.StdEncoding.DecodeString(x5c[i].(string))
		if err != nil || string(der) != string(want) {
			t.Errorf("x5c[%d] is not the standard base64 DER of the chain: %v", i, err)
		}
	}
	if h["alg"] != "RS256" {
		t.Errorf("alg = %v", h["alg"])
	}
	if got, want := keysOf(c), []string{"aud", "exp", "iat", "iss", "jti", "scope"}; !slices.Equal(got, want) {
		t.Errorf("claim names = %q, want exactly %q", got, want)
	}
	now := clk.Now().Unix()
	if c["aud"] != "https://test.maskinporten.no/" || c["iss"] != "client-1" || c["scope"] != "b:x a:y" ||
		c["iat"] != float64(now) || c["exp"] != float64(now+60) {
		t.Errorf("claims = %v", c)
	}
	if jti, _ := c["jti"].(string); len(jti) != 36 || jti[14] != '4' {
		t.Errorf("jti %q is not a UUID v4", c["jti"])
	}
}

func TestGrantKidAndOptionalClaims(t *testing.T) {
	p := thePKI(t)
	for _, cfg := range []*Config{
		{ClientID: "c", Signer: p.kidSigner(t), KeyID: "my-kid", Environment: Prod},
		{ClientID: "c", Signer: p.x5cSigner(t, 0), KeyID: "my-kid", Environment: Prod}, // KeyID wins over the chain
	} {
		g, err := cfg.Grant(Request{
			Scopes: []string{"a"}, Resources: []string{"https://api.example.no/"}, ConsumerOrg: "910000004",
			PID: "01019012480", SystemUserOrg: "974760673", Lifetime: 120 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		h, c := decodeJWT(t, g, p, 0)
		if got, want := keysOf(h), []string{"alg", "kid"}; !slices.Equal(got, want) || h["kid"] != "my-kid" {
			t.Errorf("header = %v", h)
		}
		want := []string{"aud", "authorization_details", "consumer_org", "exp", "iat", "iss", "jti", "pid", "resource", "scope"}
		if got := keysOf(c); !slices.Equal(got, want) {
			t.Errorf("claim names = %q, want %q", got, want)
		}
		if c["exp"].(float64)-c["iat"].(float64) != 120 {
			t.Errorf("lifetime = %v", c["exp"].(float64)-c["iat"].(float64))
		}
		if res, ok := c["resource"].([]any); !ok || len(res) != 1 {
			t.Errorf("resource = %#v, want an array", c["resource"])
		}
		ad, _ := json.Marshal(c["authorization_details"])
		if string(ad) != `[{"systemuser_org":{"ID":"0192:974760673","authority":"iso6523-actorid-upis"},"type":"urn:altinn:systemuser"}]` {
			t.Errorf("authorization_details = %s", ad)
		}
	}
	// iss_onbehalfof
	cfg := &Config{ClientID: "c", Signer: p.kidSigner(t), KeyID: "k", Environment: Prod}
	g, err := cfg.Grant(Request{Scopes: []string{"a"}, OnBehalfOf: "kunde1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, c := decodeJWT(t, g, p, 0); c["iss_onbehalfof"] != "kunde1" {
		t.Errorf("iss_onbehalfof = %v", c["iss_onbehalfof"])
	}
}

func TestGrantNewJTIEachTime(t *testing.T) {
	p := thePKI(t)
	cfg := &Config{ClientID: "c", Signer: p.x5cSigner(t, 0), Environment: Test}
	seen := map[any]bool{}
	for range 5 {
		g, err := cfg.Grant(testReq)
		if err != nil {
			t.Fatal(err)
		}
		_, c := decodeJWT(t, g, p, 0)
		if seen[c["jti"]] {
			t.Fatalf("jti %v reused", c["jti"])
		}
		seen[c["jti"]] = true
	}
}

func TestGrantConfigErrors(t *testing.T) {
	p := thePKI(t)
	ok := Config{ClientID: "c", Signer: p.x5cSigner(t, 0), Environment: Test}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no client id", func(c *Config) { c.ClientID = "" }, "ClientID"},
		{"client id with space", func(c *Config) { c.ClientID = "a b" }, "ClientID"},
		{"no signer", func(c *Config) { c.Signer = nil }, "Signer"},
		{"no chain and no kid", func(c *Config) { c.Signer = p.kidSigner(t) }, "KeyID"},
		{"bad algorithm", func(c *Config) { c.Algorithm = "HS256" }, "Algorithm"},
		{"EC algorithm for an RSA key", func(c *Config) { c.Algorithm = "ES256" }, "Algorithm"},
		{"token endpoint not a URL", func(c *Config) { c.Environment.TokenEndpoint = "maskinporten token" }, "Environment.TokenEndpoint"},
		{"http endpoint", func(c *Config) { c.Environment.TokenEndpoint = "http://maskinporten.no/token" }, "Environment.TokenEndpoint"},
		{"no issuer", func(c *Config) { c.Environment.Issuer = "" }, "Environment.Issuer"},
		{"expired certificate", func(c *Config) { c.now = func() time.Time { return time.Now().Add(2 * 365 * 24 * time.Hour) } }, "Signer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.edit(&cfg)
			_, err := cfg.Grant(testReq)
			var ce *ConfigError
			if !errors.Is(err, ErrInvalidConfig) || !errors.As(err, &ce) {
				t.Fatalf("Grant = %v, want *ConfigError", err)
			}
			if ce.Field != tc.field {
				t.Errorf("Field = %q, want %q (%v)", ce.Field, tc.field, err)
			}
		})
	}
	// A test certificate (by issuer) against prod.
	cfg := ok
	cfg.Environment = Prod
	if _, err := cfg.Grant(testReq); err != nil {
		t.Errorf("unknown issuer against prod: %v, want accepted", err)
	}
}

// The encoded header is kept for the last chain only: grants from configs
// taken in turn each carry their own alg, kid or x5c.
func TestGrantHeaderOfEachConfig(t *testing.T) {
	p := thePKI(t)
	cfgs := []*Config{
		{ClientID: "c", Signer: p.x5cSigner(t, 0), Environment: Test},
		{ClientID: "c", Signer: p.x5cSigner(t, 1), Environment: Test},
		{ClientID: "c", Signer: p.x5cSigner(t, 1), Environment: Test, Algorithm: "PS256"},
		{ClientID: "c", Signer: p.x5cSigner(t, 0), Environment: Test, KeyID: "kid-a"},
		{ClientID: "c", Signer: p.x5cSigner(t, 0), Environment: Test, KeyID: "kid-b"},
	}
	want := []struct{ alg, kid string }{{"RS256", ""}, {"RS256", ""}, {"PS256", ""}, {"RS256", "kid-a"}, {"RS256", "kid-b"}}
	for round := range 2 {
		for i, cfg := range cfgs {
			g, err := cfg.Grant(Request{Scopes: []string{"a:b"}})
			if err != nil {
				t.Fatal(err)
			}
			leaf := 0
			if i == 1 || i == 2 {
				leaf = 1
			}
			var h map[string]any
			js, err := base64.RawURLEncoding.DecodeString(strings.Split(g, ".")[0])
			if err != nil || json.Unmarshal(js, &h) != nil {
				t.Fatalf("round %d, config %d: header %q does not decode", round, i, js)
			}
			if h["alg"] != want[i].alg || want[i].kid != "" && h["kid"] != want[i].kid {
				t.Errorf("round %d, config %d: header %v; want alg %s, kid %q", round, i, h, want[i].alg, want[i].kid)
			}
			if x5c, _ := h["x5c"].([]any); want[i].kid == "" {
				der, err := base64.StdEncoding.DecodeString(fmt.Sprint(x5c[0]))
				if err != nil || !bytes.Equal(der, p.leaves[leaf].Raw) {
					t.Errorf("round %d, config %d: x5c[0] is not leaf %d", round, i, leaf)
				}
			} else if x5c != nil {
				t.Errorf("round %d, config %d: x5c beside a kid", round, i)
			}
		}
	}
}
