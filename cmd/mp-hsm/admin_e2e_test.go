//go:build cgo

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

const e2eAdminClient = "e2e-admin"

// TestE2EAdminKeys registers a key made on the card through the emulated
// self-service API, uses it, and retires the old one.
func TestE2EAdminKeys(t *testing.T) {
	t.Parallel()
	_, srv, env, old := adminFixture(t)
	list := func() keySetJSON {
		t.Helper()
		res := runCLI(t, env, "admin", "keys", "list", "--client-id", e2eClient, "--output", "json")
		e2eWantOK(t, res)
		var out keySetJSON
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
			t.Fatalf("list --output json: %v\n%s", err, res)
		}
		return out
	}
	kidsOf := func(s keySetJSON) string {
		var k []string
		for _, r := range s.Keys {
			k = append(k, r.Kid)
		}
		return strings.Join(k, ",")
	}
	if got := list(); kidsOf(got) != old || got.Keys[0].Size != 2048 || got.Keys[0].Alg != "RS256" || got.Created == "" || got.LastUpdated == "" {
		t.Fatalf("list = %+v, want the card's key with its dates", got)
	}
	res := runCLI(t, env, "admin", "keys", "list", "--client-id", e2eClient)
	e2eWantOK(t, res)
	if !strings.Contains(res.stdout, "KID") || !strings.Contains(res.stdout, old) || !strings.Contains(res.stdout, "last updated") {
		t.Errorf("list as text:\n%s", res.stdout)
	}

	// A new key on the card, registered beside the old one, at once good.
	e2eWantOK(t, runCLI(t, env, "key", "generate", "--label", "Next", "--id", "0d"))
	res = runCLI(t, env, "jwk", "--key-id", "0d", "--kid", "next-1")
	e2eWantOK(t, res)
	jwkFile := filepath.Join(t.TempDir(), "next.json")
	if err := os.WriteFile(jwkFile, []byte(res.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	res = runCLI(t, env, "admin", "keys", "add", "--client-id", e2eClient, jwkFile)
	e2eWantOK(t, res)
	if !strings.Contains(res.stdout, "next-1") || !strings.Contains(res.stdout, old) {
		t.Errorf("add printed:\n%s", res.stdout)
	}
	res = runCLI(t, env, e2eTokenArgs(srv, "--key-id", "0d", "--kid", "next-1")...)
	e2eWantOK(t, res)
	e2eAccessToken(t, srv, res.stdout)

	// Refusals: nothing reaches the API for a bad key; a taken kid costs
	// the GET alone.
	before := srv.Stats().AdminRequests
	res = runCLIWith(t, cliOpts{env: env, stdin: `{"kty":"RSA","kid":"x","use":"sig","n":"AQAB","e":"AQAB","d":"AQAB"}`},
		"admin", "keys", "add", "--client-id", e2eClient, "-")
	e2eWantFail(t, res, exitUsage, "private members")
	res = runCLIWith(t, cliOpts{env: env, stdin: `{"kty":"RSA","kid":"x","use":"enc","n":"AQAB","e":"AQAB"}`},
		"admin", "keys", "add", "--client-id", e2eClient, "-")
	e2eWantFail(t, res, exitUsage, `use "enc"`)
	if n := srv.Stats().AdminRequests - before; n != 0 {
		t.Errorf("%d API requests for keys refused locally, want 0", n)
	}
	e2eWantFail(t, runCLI(t, env, "admin", "keys", "add", "--client-id", e2eClient, jwkFile), exitUsage, `kid "next-1"`)
	if n := srv.Stats().AdminRequests - before; n != 1 {
		t.Errorf("%d API requests for a taken kid, want 1 (the GET)", n)
	}
	e2eWantFail(t, runCLI(t, env, "admin", "keys", "remove", "--client-id", e2eClient, "--kid", "nope"), exitUsage, "no key with kid", old)
	e2eWantFail(t, runCLI(t, env, "admin", "keys", "list"), exitUsage, "--client-id")
	// The API's refusal keeps its status and words: a client that is
	// not the self-service client is refused by Maskinporten the scope.
	res = runCLI(t, e2eSetenv(env, "MP_HSM_ADMIN_CLIENT_ID="+e2eClient), "admin", "keys", "list", "--client-id", e2eClient)
	e2eWantFail(t, res, exitRefused)

	// The old key retired; the new one stays.
	res = runCLI(t, env, "admin", "keys", "remove", "--client-id", e2eClient, "--kid", old, "--output", "json")
	e2eWantOK(t, res)
	if got := list(); kidsOf(got) != "next-1" {
		t.Errorf("after remove: %+v", got)
	}
	e2eWantFail(t, runCLI(t, env, e2eTokenArgs(srv, "--kid", old)...), exitRefused)
	// The last key: the set is deleted.
	e2eWantOK(t, runCLI(t, env, "admin", "keys", "remove", "--client-id", e2eClient, "--kid", "next-1"))
	if got := list(); len(got.Keys) != 0 {
		t.Errorf("after removing the last: %+v", got)
	}
}

// TestE2EEmulateAdminAPI runs `mp-hsm emulate --admin-client-id` and
// registers a key on its client through it.
func TestE2EEmulateAdminAPI(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	root := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(root, fx.ca.RootPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	em := startEmulate(t, binary(t), nil, "--root", root, "--client-id", e2eClient,
		"--org-number", softhsm.DefaultOrgNumber, "--scope", e2eScopeRead, "--admin-client-id", e2eAdminClient)
	wk, p := em.wellKnown, em.proc
	api := strings.TrimSuffix(wk, "/.well-known/oauth-authorization-server") + "/api/v1/"
	env := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card", "MP_HSM_WELL_KNOWN="+wk, "MP_HSM_ADMIN_API="+api)
	res := runCLI(t, env, "admin", "keys", "list", "--client-id", e2eClient, "--admin-client-id", e2eAdminClient)
	e2eWantOK(t, res)
	if !strings.Contains(res.stdout, "no registered keys") {
		t.Errorf("list: %s", res.stdout)
	}
	res = runCLI(t, env, "jwk", "--kid", "card-1")
	e2eWantOK(t, res)
	res = runCLIWith(t, cliOpts{env: env, stdin: res.stdout}, "admin", "keys", "add", "--client-id", e2eClient, "--admin-client-id", e2eAdminClient, "-")
	e2eWantOK(t, res)
	res = runCLI(t, env, "token", "--client-id", e2eClient, "--scope", e2eScopeRead, "--kid", "card-1")
	e2eWantOK(t, res)
	if err := p.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Err(); err != nil {
		t.Errorf("emulate after SIGTERM: %v", err)
	}
}

// TestE2EAdminRotate rotates the client's key in one command, and shows
// what a failed proof leaves behind.
func TestE2EAdminRotate(t *testing.T) {
	t.Parallel()
	_, srv, env, old := adminFixture(t)
	kids := func() string {
		t.Helper()
		res := runCLI(t, env, "admin", "keys", "list", "--client-id", e2eClient, "--output", "json")
		e2eWantOK(t, res)
		var out keySetJSON
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
			t.Fatal(err)
		}
		var k []string
		for _, r := range out.Keys {
			k = append(k, r.Kid)
		}
		return strings.Join(k, ",")
	}

	// Refused before anything changes.
	e2eWantFail(t, runCLI(t, env, "admin", "keys", "rotate", "--client-id", e2eClient, "--label", "R"), exitUsage, "--scope")
	e2eWantFail(t, runCLI(t, env, "admin", "keys", "rotate", "--client-id", e2eClient, "--label", "Authentication", "--scope", e2eScopeRead),
		exitUsage, "taken", "nothing was changed")

	// A proof that fails (a scope the client lacks): the new key stays
	// registered beside the old, nothing is removed, and the error says so.
	res := runCLI(t, env, "admin", "keys", "rotate", "--client-id", e2eClient, "--label", "R0", "--id", "0e", "--scope", "e2e:none", "--remove", old)
	e2eWantFail(t, res, exitRefused, "is registered on client", "nothing was removed")
	if got := kids(); !strings.HasPrefix(got, old+",") || strings.Count(got, ",") != 1 {
		t.Errorf("after the failed proof the client has %q, want the old key and the new", got)
	}

	res = runCLI(t, env, "admin", "keys", "rotate", "--client-id", e2eClient, "--label", "R1", "--id", "0f", "--scope", e2eScopeRead, "--remove", old, "--output", "json")
	e2eWantOK(t, res)
	var rot rotatedJSON
	if err := json.Unmarshal([]byte(res.stdout), &rot); err != nil || rot.ID != "0f" || rot.Removed != old || rot.Kid == "" {
		t.Fatalf("rotate printed %+v (%v)", rot, err)
	}
	if got := kids(); strings.Contains(got, old) || !strings.Contains(got, rot.Kid) {
		t.Errorf("after rotate the client has %q: want %s and not %s", got, rot.Kid, old)
	}
	res = runCLI(t, env, e2eTokenArgs(srv, "--key-id", "0f", "--kid", rot.Kid)...)
	e2eWantOK(t, res)
	e2eAccessToken(t, srv, res.stdout)
}

// TestE2EDoctorRegisteredKey: doctor looks --kid up through the
// self-service API when given --admin-client-id.
func TestE2EDoctorRegisteredKey(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	cfg := fx.emulatorConfig(t)
	cfg.AdminClient = e2eAdminClient
	cfg.Clients = append(cfg.Clients, emulator.Client{ID: e2eAdminClient, OrgNumber: softhsm.DefaultOrgNumber,
		Scopes: []string{emulator.ScopeAdminRead}})
	srv := emulator.NewTest(t, cfg)
	env := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card", "MP_HSM_ADMIN_CLIENT_ID="+e2eAdminClient,
		"MP_HSM_ADMIN_API="+srv.AdminAPIURL(), "MP_HSM_WELL_KNOWN="+srv.MetadataURL(), "MP_HSM_CLIENT_ID="+e2eClient)
	kid, err := signer.Thumbprint(fx.cardPub)
	if err != nil {
		t.Fatal(err)
	}
	res := runCLI(t, env, "doctor", "--kid", kid)
	e2eWantOK(t, res)
	if !strings.Contains(res.stdout, "registered-key") || !strings.Contains(res.stdout, "is registered on client "+e2eClient) {
		t.Errorf("doctor:\n%s", res.stdout)
	}
	res = runCLI(t, env, "doctor", "--kid", "not-there")
	if res.code != exitRefused || !strings.Contains(res.stdout, `kid "not-there" is not registered`) || !strings.Contains(res.stdout, "admin keys add") {
		t.Errorf("doctor with an unregistered kid:\n%s", res)
	}
	// Without --admin-client-id there is no such check.
	res = runCLI(t, e2eSetenv(env, "MP_HSM_ADMIN_CLIENT_ID"), "doctor", "--kid", kid)
	e2eWantOK(t, res)
	if strings.Contains(res.stdout, "registered-key") {
		t.Errorf("registered-key ran without --admin-client-id:\n%s", res.stdout)
	}
}

// adminFixture is the setup of the admin tests: the e2e tokens, an
// emulator that also serves the self-service API to e2eAdminClient, the
// environment that points the binary at both with the card's key, and the
// card key's registered kid (its thumbprint).
func adminFixture(t *testing.T) (*e2eFixture, *emulator.Server, []string, string) {
	t.Helper()
	fx := e2e(t)
	cfg := fx.emulatorConfig(t)
	cfg.AdminClient = e2eAdminClient
	cfg.Clients = append(cfg.Clients, emulator.Client{ID: e2eAdminClient, OrgNumber: softhsm.DefaultOrgNumber,
		Scopes: []string{emulator.ScopeAdminRead, emulator.ScopeAdminWrite}})
	srv := emulator.NewTest(t, cfg)
	env := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card", "MP_HSM_ADMIN_CLIENT_ID="+e2eAdminClient,
		"MP_HSM_ADMIN_API="+srv.AdminAPIURL(), "MP_HSM_WELL_KNOWN="+srv.MetadataURL())
	old, err := signer.Thumbprint(fx.cardPub)
	if err != nil {
		t.Fatal(err)
	}
	return fx, srv, env, old
}

// TestE2EDoctorAfterRotate: after admin keys rotate, doctor checks the new
// key (registered by kid, without a certificate) while the self-service
// client authenticates with the enterprise key, chosen apart with
// --admin-key-id or --admin-key-label; admin keys takes the same flags, so
// that client.env's MP_HSM_KEY_ID (the client's signing key) can stay set.
func TestE2EDoctorAfterRotate(t *testing.T) {
	t.Parallel()
	_, srv, env, _ := adminFixture(t)
	res := runCLI(t, env, "admin", "keys", "rotate", "--client-id", e2eClient, "--label", "R1", "--id", "0f", "--scope", e2eScopeRead, "--output", "json")
	e2eWantOK(t, res)
	var rot rotatedJSON
	if err := json.Unmarshal([]byte(res.stdout), &rot); err != nil || rot.Kid == "" {
		t.Fatalf("rotate printed %+v (%v)", rot, err)
	}
	env = e2eSetenv(env, "MP_HSM_CLIENT_ID="+e2eClient, "MP_HSM_SCOPE="+e2eScopeRead, "MP_HSM_WELL_KNOWN="+srv.MetadataURL())
	doctorNew := []string{"doctor", "--key-id", "0f", "--kid", rot.Kid}

	// The new key has no certificate, so it cannot be the self-service
	// client's: the check says which flag chooses that key.
	res = runCLI(t, env, doctorNew...)
	if res.code != exitToken {
		t.Errorf("doctor on the new key without --admin-key-*: exit %d, want %d:\n%s", res.code, exitToken, res)
	}
	wantDoctorCheck(t, doctorResult{stdout: res.stdout, stderr: res.stderr, code: res.code}, "registered-key", "fail", "no certificate", "--admin-key-id")
	registered := fmt.Sprintf("kid %q is registered on client %s", rot.Kid, e2eClient)
	for _, admin := range [][]string{
		{"--admin-key-label", "Authentication"},
		{"--admin-key-id", "01"},
	} {
		res = runCLI(t, env, append(doctorNew, admin...)...)
		e2eWantOK(t, res)
		r := doctorResult{stdout: res.stdout, stderr: res.stderr, code: res.code}
		wantDoctorCheck(t, r, "key", "ok", `id 0f label "R1"`)
		wantDoctorCheck(t, r, "token-request", "ok")
		wantDoctorCheck(t, r, "registered-key", "ok", registered)
	}
	// From the environment, beside client.env's key: the same.
	clientEnv := e2eSetenv(env, "MP_HSM_KEY_ID=0f", "MP_HSM_KID="+rot.Kid, "MP_HSM_ADMIN_KEY_ID=01")
	res = runCLI(t, clientEnv, "doctor")
	e2eWantOK(t, res)
	wantDoctorCheck(t, doctorResult{stdout: res.stdout, stderr: res.stderr, code: res.code}, "registered-key", "ok", registered)
	res = runCLI(t, clientEnv, "admin", "keys", "list", "--client-id", e2eClient)
	e2eWantOK(t, res)
	if !strings.Contains(res.stdout, rot.Kid) {
		t.Errorf("admin keys list with MP_HSM_ADMIN_KEY_ID:\n%s", res.stdout)
	}
	// rotate again from there: the self-service client signs with key 01.
	res = runCLI(t, clientEnv, "admin", "keys", "rotate", "--client-id", e2eClient, "--label", "R2", "--id", "10", "--remove", rot.Kid, "--output", "json")
	e2eWantOK(t, res)
	var rot2 rotatedJSON
	if err := json.Unmarshal([]byte(res.stdout), &rot2); err != nil || rot2.Removed != rot.Kid {
		t.Errorf("second rotate printed %+v (%v)", rot2, err)
	}
	// Without it, admin keys authenticates with the key flags' key, which
	// has no certificate: the error names the flag that fixes it.
	e2eWantFail(t, runCLI(t, e2eSetenv(clientEnv, "MP_HSM_ADMIN_KEY_ID"), "admin", "keys", "list", "--client-id", e2eClient),
		exitToken, "no certificate", "--admin-key-id")
}
