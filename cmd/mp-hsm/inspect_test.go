//go:build cgo

package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/softhsm"
)

// inspectTestdata holds the JWTs and golden outputs of package inspect,
// which owns them (go test ./inspect -update rewrites them).
var inspectTestdata = filepath.Join("..", "..", "inspect", "testdata")

// inspectReportJSON is the JSON of mp-hsm inspect, as a script reads it.
type inspectReportJSON struct {
	Kind     string         `json:"kind"`
	Verified *bool          `json:"verified"`
	Header   map[string]any `json:"header"`
	Claims   map[string]any `json:"claims"`
	Times    map[string]struct {
		Unix     int64  `json:"unix"`
		Time     string `json:"time"`
		Relative string `json:"relative"`
	} `json:"times"`
	Lifetime     *int64 `json:"lifetime_seconds"`
	Expired      *bool  `json:"expired"`
	KeyID        string `json:"kid"`
	Certificates []struct {
		Subject     string   `json:"subject"`
		IssuerCN    string   `json:"issuer_cn"`
		OrgNumber   string   `json:"org_number"`
		Environment string   `json:"environment"`
		NotAfter    string   `json:"not_after"`
		Validity    string   `json:"validity"`
		KeyUsage    []string `json:"key_usage"`
	} `json:"certificates"`
	AccessToken *struct {
		ClientID    string `json:"client_id"`
		Scope       string `json:"scope"`
		Consumer    string `json:"consumer"`
		ConsumerOrg string `json:"consumer_org"`
	} `json:"access_token"`
	Signature int `json:"signature_bytes"`
}

// inspectJSONOf runs mp-hsm inspect --output json on the JWT in stdin.
func inspectJSONOf(t *testing.T, stdin string, args ...string) inspectReportJSON {
	t.Helper()
	r := doctorExec(t, nil, stdin, append([]string{"inspect", "--output", "json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("inspect: exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	var rep inspectReportJSON
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("inspect --output json: %v\n%s", err, r.stdout)
	}
	return rep
}

// wantNoLeak fails t when out holds the JWT's signature: inspect prints
// decoded parts only, never the token.
func wantNoLeak(t *testing.T, jwt, out string) {
	t.Helper()
	jwt = strings.TrimSpace(jwt)
	if i := strings.LastIndex(jwt, "."); i >= 0 && len(jwt)-i > 20 && strings.Contains(out, jwt[i+1:]) {
		t.Errorf("the output holds the token's signature:\n%s", out)
	}
}

func TestInspectGolden(t *testing.T) {
	for _, tc := range []struct{ name, now string }{
		{"grant", "2026-01-01T12:03:00Z"},
		{"access_token", "2026-01-01T12:01:15Z"},
	} {
		jwt, err := os.ReadFile(filepath.Join(inspectTestdata, tc.name+".jwt"))
		if err != nil {
			t.Fatal(err)
		}
		for _, out := range []string{"text", "json"} {
			t.Run(tc.name+"/"+out, func(t *testing.T) {
				r := doctorExec(t, nil, string(jwt), "inspect", "--now", tc.now, "--output", out, "-")
				if r.code != 0 {
					t.Fatalf("exit %d\nstderr:\n%s", r.code, r.stderr)
				}
				if !strings.Contains(r.stderr, "nothing is verified") {
					t.Errorf("stderr does not say that nothing is verified: %q", r.stderr)
				}
				wantNoLeak(t, string(jwt), r.stdout+r.stderr)
				golden := filepath.Join(inspectTestdata, tc.name+"."+map[string]string{"text": "txt", "json": "json"}[out])
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatal(err)
				}
				if r.stdout != string(want) {
					t.Errorf("output differs from %s (package inspect's golden file):\ngot:\n%s\nwant:\n%s", golden, r.stdout, want)
				}
			})
		}
	}
}

func TestInspectGrantFromCLI(t *testing.T) {
	tok, _ := doctorSetup(t, softhsm.LeafOptions{})
	g := doctorExec(t, doctorTokenEnv(tok), "", "grant", "--token-label", tok.Label, "--env", "test",
		"--client-id", doctorClientID, "--scope", doctorScope)
	if g.code != 0 {
		t.Fatalf("mp-hsm grant: exit %d\n%s", g.code, g.stderr)
	}
	rep := inspectJSONOf(t, g.stdout, "-")
	if rep.Kind != "grant" || rep.Verified == nil || *rep.Verified {
		t.Errorf("kind %q verified %v, want grant, false", rep.Kind, rep.Verified)
	}
	if rep.Header["alg"] != "RS256" || rep.Claims["iss"] != doctorClientID || rep.Claims["aud"] != "https://test.maskinporten.no/" || rep.Claims["scope"] != doctorScope {
		t.Errorf("header %v claims %v", rep.Header, rep.Claims)
	}
	if rep.Lifetime == nil || *rep.Lifetime != 60 {
		t.Errorf("lifetime %v, want 60", rep.Lifetime)
	}
	if len(rep.Certificates) != 2 {
		t.Fatalf("%d certificates, want leaf and intermediate", len(rep.Certificates))
	}
	leaf := rep.Certificates[0]
	if leaf.OrgNumber != softhsm.DefaultOrgNumber || leaf.Environment != "test" || leaf.IssuerCN != "Buypass Class 3 Test4 CA G2 HT Business" {
		t.Errorf("leaf: %+v", leaf)
	}
	if !strings.Contains(leaf.Subject, "organizationIdentifier=NTRNO-"+softhsm.DefaultOrgNumber) {
		t.Errorf("leaf subject %q lacks the organizationIdentifier", leaf.Subject)
	}

	// Relative words against a fixed clock: three minutes after iat.
	iat := time.Unix(rep.Times["iat"].Unix, 0)
	r := doctorExec(t, nil, g.stdout, "inspect", "--now", iat.Add(3*time.Minute).UTC().Format(time.RFC3339))
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"Maskinporten grant", "(3 min ago)", "(expired 2 min ago)", "org number   " + softhsm.DefaultOrgNumber,
		"environment  test", "NOT verified"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("text output lacks %q:\n%s", want, r.stdout)
		}
	}
	wantNoLeak(t, g.stdout, r.stdout+r.stderr)
}

func TestInspectAccessTokenFromEmulator(t *testing.T) {
	tok, srv := doctorSetup(t, softhsm.LeafOptions{})
	get := func(out string) string {
		r := doctorExec(t, doctorTokenEnv(tok), "", "token", "--token-label", tok.Label, "--well-known", srv.MetadataURL(),
			"--client-id", doctorClientID, "--scope", doctorScope, "--output", out)
		if r.code != 0 {
			t.Fatalf("mp-hsm token: exit %d\n%s", r.code, r.stderr)
		}
		return r.stdout
	}
	plain := get("token")
	for name, input := range map[string]string{
		"plain":  plain,
		"header": get("header"),
		"json":   get("json"),
	} {
		t.Run(name, func(t *testing.T) {
			rep := inspectJSONOf(t, input)
			if rep.Kind != "access_token" {
				t.Errorf("kind %q, want access_token", rep.Kind)
			}
			a := rep.AccessToken
			if a == nil || a.ClientID != doctorClientID || a.Scope != doctorScope || a.ConsumerOrg != softhsm.DefaultOrgNumber ||
				a.Consumer != "0192:"+softhsm.DefaultOrgNumber {
				t.Errorf("access_token: %+v", a)
			}
			if rep.Expired == nil || *rep.Expired || !strings.HasPrefix(rep.Times["exp"].Relative, "in ") {
				t.Errorf("a fresh token: expired %v, exp %q", rep.Expired, rep.Times["exp"].Relative)
			}
			if rep.KeyID == "" || rep.Signature != 256 {
				t.Errorf("kid %q, signature %d bytes", rep.KeyID, rep.Signature)
			}
		})
	}
	// As the argument, in text.
	r := doctorExec(t, nil, "", "inspect", strings.TrimSpace(plain))
	if r.code != 0 || !strings.Contains(r.stdout, "Maskinporten access token") ||
		!strings.Contains(r.stdout, "0192:"+softhsm.DefaultOrgNumber+" (organisation number "+softhsm.DefaultOrgNumber+")") {
		t.Errorf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	wantNoLeak(t, plain, r.stdout+r.stderr)
}

// b64url encodes s as a JWT part.
func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestInspectBadInput(t *testing.T) {
	hdr := b64url(`{"alg":"RS256"}`)
	claims := b64url(`{"iss":"x","exp":1}`)
	const secretish = "c2VjcmV0LXNpZ25hdHVyZS10aGF0LW11c3Qtbm90LWxlYWs"
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{"empty stdin", []string{"inspect"}, "", "no JWT given"},
		{"blank argument", []string{"inspect", "  "}, "", "no JWT given"},
		{"one part", []string{"inspect", "-"}, secretish, "found no dot"},
		{"four parts", []string{"inspect", hdr + "." + claims + "." + secretish + ".x"}, "", "found 4 parts"},
		{"not base64url", []string{"inspect", "-"}, hdr + "." + claims + "!." + secretish, "part 2 (the claims) is not base64url: character '!' at byte"},
		{"claims cut short", []string{"inspect", "-"}, hdr + "." + b64url(`{"iss":"x"`) + "." + secretish, "part 2 (the claims) is not JSON: it ends too early"},
		{"JSON without token", []string{"inspect", "-"}, `{"token_type":"Bearer","secret":"` + secretish + `"}`, "JSON without access_token"},
		{"two arguments", []string{"inspect", hdr, claims}, "", "not 2 arguments"},
		{"bad --now", []string{"inspect", "--now", "yesterday", hdr + "." + claims + "."}, "", `--now "yesterday"`},
		{"bad --output", []string{"inspect", "--output", "yaml", hdr + "." + claims + "."}, "", `--output "yaml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := doctorExec(t, nil, tc.stdin, tc.args...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, exitUsage, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout not empty:\n%s", r.stdout)
			}
			if strings.Contains(r.stderr, secretish) || strings.Contains(r.stderr, claims) {
				t.Errorf("stderr echoes the input:\n%s", r.stderr)
			}
		})
	}
}
