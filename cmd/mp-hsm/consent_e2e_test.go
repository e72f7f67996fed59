//go:build cgo

package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

const (
	e2eConsentID    = "77ed8698-e619-4066-9eb4-5c1eb3f165a1"
	e2eConsentOther = "93413201-b7e8-4ec3-a899-580fc02c6aeb"
)

// TestE2EConsent: mp-hsm token with --consent-id and --consent-from (or
// their variables) gets a consent token from the emulator, signed on the
// SoftHSM2 card; the token carries to, consented, validTo and
// consentRights; inspect shows it with the identity number masked; an
// unknown consent is refused by the emulator (exit 4); and nothing the
// command writes holds the identity number.
func TestE2EConsent(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	fnr := e2ePID(t)
	from := grant.PersonURNPrefix + fnr
	cfg := fx.emulatorConfig(t)
	cfg.Consents = []emulator.Consent{{ID: e2eConsentID, From: from, To: softhsm.DefaultOrgNumber}}
	emuLog := &testexec.Buffer{}
	cfg.Logf = func(f string, a ...any) { fmt.Fprintf(emuLog, f+"\n", a...) }
	srv := emulator.NewTest(t, cfg)
	var outputs []string

	res := runCLI(t, fx.env(t, fx.card), append([]string{"--log-level", "debug"}, e2eTokenArgs(srv, "--consent-id", e2eConsentID, "--consent-from", from)...)...)
	if res.code != 0 {
		t.Fatalf("token --consent-id: %s", res)
	}
	outputs = append(outputs, res.stderr)
	claims := e2eAccessToken(t, srv, res.stdout)
	ad, _ := claims["authorization_details"].([]any)
	if len(ad) != 1 {
		t.Fatalf("authorization_details = %v", claims["authorization_details"])
	}
	d := ad[0].(map[string]any)
	if d["type"] != grant.ConsentType || d["id"] != e2eConsentID || d["from"] != from ||
		d["to"].(map[string]any)["ID"] != "0192:"+softhsm.DefaultOrgNumber || d["consented"] == nil || d["validTo"] == nil || d["consentRights"] == nil {
		t.Errorf("consent element = %v", d)
	}

	// inspect: readable, masked unless --show-personal-data.
	tok := strings.TrimSpace(res.stdout)
	res = runCLI(t, nil, "inspect", tok)
	if res.code != 0 || strings.Contains(res.stdout, fnr) || !strings.Contains(res.stdout, fnr[:6]+"*****") ||
		!strings.Contains(res.stdout, "valid to") || !strings.Contains(res.stdout, "right") {
		t.Errorf("inspect of a consent token:\n%s", res)
	}
	if res = runCLI(t, nil, "inspect", "--show-personal-data", tok); !strings.Contains(res.stdout, from) {
		t.Errorf("inspect --show-personal-data should show from in full:\n%s", res)
	}

	// The variables, with the caller's own details: an unknown consent is
	// Maskinporten's (the emulator's) refusal.
	res = runCLI(t, fx.env(t, fx.card, "MP_HSM_CONSENT_ID="+e2eConsentOther, "MP_HSM_CONSENT_FROM="+from), e2eTokenArgs(srv)...)
	e2eWantFail(t, res, exitRefused, "invalid_authorization_details", "No consent with id "+e2eConsentOther)
	outputs = append(outputs, res.stderr)

	// grant: the system user, the consent and the caller's own details in
	// one array.
	res = runCLI(t, fx.env(t, fx.card), "grant", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead,
		"--system-user-org", "910000004", "--consent-id", e2eConsentID, "--consent-from", from,
		"--authorization-details", `[{"type":"urn:example:future","x":[1]}]`)
	e2eWantOK(t, res)
	_, gc := e2eGrant(t, fx, res.stdout)
	gad, _ := gc["authorization_details"].([]any)
	if len(gad) != 3 || gad[0].(map[string]any)["type"] != grant.SystemUserType || gad[1].(map[string]any)["type"] != grant.ConsentType ||
		gad[2].(map[string]any)["type"] != "urn:example:future" {
		t.Errorf("grant authorization_details = %v", gc["authorization_details"])
	}

	for _, s := range append(outputs, emuLog.String()) {
		if strings.Contains(s, fnr) {
			t.Errorf("the identity number reached a log or error:\n%s", s)
		}
	}
}

// TestE2EConsentBadInput: malformed consent input exits 2 before the
// module is loaded (a module that does not exist would exit 3), and the
// message masks the identity number.
func TestE2EConsentBadInput(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	srv := fx.emulator(t)
	nope := filepath.Join(t.TempDir(), "libnope.so")
	badFNR := "01019012481"
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"id without from", []string{"--consent-id", e2eConsentID}, []string{"--consent-from", "missing"}},
		{"from without id", []string{"--consent-from", grant.PersonURNPrefix + "01019012480"}, []string{"--consent-id", "missing"}},
		{"id not a UUID", []string{"--consent-id", "1234", "--consent-from", grant.PersonURNPrefix + "01019012480"}, []string{"--consent-id", "UUID"}},
		{"bad fnr", []string{"--consent-id", e2eConsentID, "--consent-from", grant.PersonURNPrefix + badFNR}, []string{"--consent-from", "010190*****", "check digits"}},
		{"bad orgnr", []string{"--consent-id", e2eConsentID, "--consent-from", grant.OrganizationURNPrefix + "974760674"}, []string{"--consent-from", "check digit"}},
		{"not a URN", []string{"--consent-id", e2eConsentID, "--consent-from", "person:" + badFNR}, []string{"--consent-from", "urn:altinn:person:identifier-no:"}},
		{"details not an array", []string{"--authorization-details", `{"type":"x"}`}, []string{"--authorization-details", "JSON array"}},
		{"details without type", []string{"--authorization-details", `[{"id":"x"}]`}, []string{"--authorization-details", `"type"`}},
		{"details with a bad consent", []string{"--authorization-details", `[{"type":"urn:altinn:consent","id":"` + e2eConsentID + `","from":"` + grant.PersonURNPrefix + badFNR + `"}]`},
			[]string{"--authorization-details", "national identity number"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runCLI(t, fx.env(t, fx.card), e2eTokenArgs(srv, append(tc.args, "--module", nope)...)...)
			e2eWantFail(t, res, exitUsage, tc.want...)
			if strings.Contains(res.stderr, badFNR) {
				t.Errorf("stderr shows the identity number:\n%s", res)
			}
		})
	}
}

// TestE2EEmulateConsent: `mp-hsm emulate --consent ID:FROM` knows the
// consent; a malformed --consent is refused with the number masked.
func TestE2EEmulateConsent(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	root := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(root, fx.ca.RootPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	fnr := e2ePID(t)
	from := grant.PersonURNPrefix + fnr
	em := startEmulate(t, binary(t), []string{"MP_HSM_EMULATE_ORG_NUMBER=" + softhsm.DefaultOrgNumber},
		"--root", root, "--client-id", e2eClient, "--scope", e2eScopeRead, "--consent", e2eConsentID+":"+from)
	res := runCLI(t, fx.env(t, fx.card), "token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead,
		"--well-known", em.wellKnown, "--consent-id", e2eConsentID, "--consent-from", from)
	e2eWantOK(t, res)
	res = runCLI(t, fx.env(t, fx.card), "token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead,
		"--well-known", em.wellKnown, "--consent-id", e2eConsentID, "--consent-from", grant.OrganizationURNPrefix+"974760673")
	e2eWantFail(t, res, exitRefused, "not given by the party named in from")
	if strings.Contains(em.stderr.String(), fnr) {
		t.Errorf("emulate logged the identity number:\n%s", em.stderr.String())
	}

	res = runCLI(t, nil, "emulate", "--client-id", e2eClient, "--org-number", softhsm.DefaultOrgNumber, "--root", root,
		"--consent", e2eConsentID+":"+grant.PersonURNPrefix+"01019012481")
	e2eWantFail(t, res, exitUsage, "--consent", "010190*****")
	if strings.Contains(res.stderr, "01019012481") {
		t.Errorf("emulate --consent shows the identity number:\n%s", res)
	}

	// The same consent from a [[client]] table of emulate --config.
	conf := filepath.Join(t.TempDir(), "emulate.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "[[client]]\nclient-id = %q\norg-number = %q\nscopes = [%q]\nconsents = [%q]\n",
		e2eClient, softhsm.DefaultOrgNumber, e2eScopeRead, e2eConsentID+":"+from), 0o600); err != nil {
		t.Fatal(err)
	}
	em = startEmulate(t, binary(t), nil, "--root", root, "--config", conf)
	res = runCLI(t, fx.env(t, fx.card), "token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead,
		"--well-known", em.wellKnown, "--consent-id", e2eConsentID, "--consent-from", from)
	e2eWantOK(t, res)
	res = runCLI(t, fx.env(t, fx.card), "token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead,
		"--well-known", em.wellKnown, "--consent-id", "0d6c5b7e-4f0a-4c43-9a59-2e1f3a4b5c6d", "--consent-from", from)
	e2eWantFail(t, res, exitRefused, "consent")
}

// TestServeConsent runs `mp-hsm serve --config` as a process on SoftHSM2
// with the emulator: a client whose authorization-types list
// urn:altinn:consent gets a consent token for a caller's
// authorization_details; a client without the key is refused; the audit
// log and stderr hold the consent id but not the identity number.
func TestServeConsent(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{Label: "serve"}, softhsm.LeafOptions{})
	fnr := "01019012480"
	from := grant.PersonURNPrefix + fnr
	emu := emulator.NewTest(t, emulator.Config{
		Roots:    []*x509.Certificate{ca.Root},
		Clients:  []emulator.Client{{ID: "bank-mp", OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{"altinn:consentrequests.read"}}},
		Consents: []emulator.Consent{{ID: e2eConsentID, From: from, To: softhsm.DefaultOrgNumber}},
		Logf:     func(string, ...any) {},
	})
	dir, err := os.MkdirTemp("", "mphsm") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock, audit, conf := filepath.Join(dir, "s.sock"), filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "mp-hsm.toml")
	uid := os.Getuid()
	config := fmt.Sprintf(`module = %q
token-serial = %q
issuer = %q
token-endpoint = %q
listen = ["unix:%s"]
audit-log = %q

[[client]]
name = "bank"
client-id = "bank-mp"
users = [%d]
authorization-types = ["urn:altinn:consent"]

[[client]]
name = "plain"
client-id = "bank-mp"
users = [%d]
`, tok.Module, tok.Serial, emu.Issuer(), emu.TokenURL(), sock, audit, uid, uid)
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := testexec.Command(t, 2*time.Minute, binary(t), "serve", "--config", conf)
	cmd.Env = testexec.Env(dir, "SOFTHSM2_CONF="+tok.Config, "MP_HSM_PIN="+tok.PIN)
	stderr := &testexec.Buffer{}
	cmd.Stderr = stderr
	p := testexec.Start(t, cmd)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve made no socket within 30 s; stderr: %s", stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	form := func(client string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "scope": {"altinn:consentrequests.read"}, "client_id": {client},
			"authorization_details": {`[{"type":"urn:altinn:consent","id":"` + e2eConsentID + `","from":"` + from + `"}]`}}
	}
	a := servePost(t, c, "http://mp-hsm/token", form("bank"), "", "")
	if a.status != 200 || a.AccessToken == "" {
		t.Fatalf("bank: %+v; stderr: %s", a, stderr)
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(a.AccessToken, claims, func(*jwt.Token) (any, error) { return emu.PublicKey(), nil }); err != nil {
		t.Fatal(err)
	}
	if ad, _ := claims["authorization_details"].([]any); len(ad) != 1 || ad[0].(map[string]any)["id"] != e2eConsentID {
		t.Errorf("authorization_details = %v", claims["authorization_details"])
	}
	if a := servePost(t, c, "http://mp-hsm/token", form("plain"), "", ""); a.status != 400 || a.Error != "invalid_authorization_details" {
		t.Errorf("plain: %+v, want 400 invalid_authorization_details", a)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := p.Err(); err != nil {
		t.Errorf("serve after SIGTERM: %v; stderr: %s", err, stderr)
	}
	log, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), `"consent_id":["`+e2eConsentID+`"]`) || !strings.Contains(string(log), fnr[:6]+"*****") {
		t.Errorf("audit log lacks the consent id or the masked from:\n%s", log)
	}
	for what, s := range map[string]string{"audit log": string(log), "stderr": stderr.String()} {
		if strings.Contains(s, fnr) {
			t.Errorf("the %s holds the identity number:\n%s", what, s)
		}
	}
}
