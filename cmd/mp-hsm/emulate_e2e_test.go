//go:build cgo

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/softhsm"
)

// TestE2EEmulateOrganisation: every --client-id is a client (on 20aa3dc
// the last one won and the first got MP-100), --system-user-org admits
// system_user_org, and the self-service API's base is the second line.
func TestE2EEmulateOrganisation(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	root := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(root, fx.ca.RootPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	customer := softhsm.ValidOrgNumber(3)
	em := startEmulate(t, binary(t), nil, "--root", root, "--client-id", e2eClient, "--client-id", "second-client",
		"--org-number", softhsm.DefaultOrgNumber, "--scope", e2eScopeRead, "--system-user-org", customer, "--admin-client-id", e2eAdminClient)
	env := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card", "MP_HSM_WELL_KNOWN="+em.wellKnown)
	for _, client := range []string{e2eClient, "second-client"} {
		e2eWantOK(t, runCLI(t, env, "token", "--client-id", client, "--scope", e2eScopeRead))
		e2eWantOK(t, runCLI(t, env, "token", "--client-id", client, "--scope", e2eScopeRead, "--system-user-org", customer))
	}
	e2eWantFail(t, runCLI(t, env, "token", "--client-id", e2eClient, "--scope", e2eScopeRead, "--system-user-org", softhsm.ValidOrgNumber(4)),
		exitRefused, "MP-303")
	res := runCLI(t, e2eSetenv(env, "MP_HSM_ADMIN_API="+em.adminAPI), "admin", "keys", "list", "--client-id", "second-client", "--admin-client-id", e2eAdminClient)
	e2eWantOK(t, res)
}

// TestE2EEmulateConfigRefused: an emulate --config file is strict, and its
// errors name the file and the field.
func TestE2EEmulateConfigRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := filepath.Join(dir, "root.pem")
	fx := e2e(t)
	if err := os.WriteFile(root, fx.ca.RootPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, file, want string }{
		{"unknown field", "[[client]]\nclient-id = \"a\"\norg-number = \"910000004\"\nscope = [\"x\"]\n", `unknown field "scope" (want client-id, org-number, scopes`},
		{"unknown top-level key", "listen = \"x\"\n[[client]]\nclient-id = \"a\"\norg-number = \"910000004\"\n", `unknown key "listen"`},
		{"wrong type", "[[client]]\nclient-id = \"a\"\norg-number = 910000004\n", "org-number"},
		{"bad org", "[[client]]\nclient-id = \"a\"\norg-number = \"91000\"\n", `org-number "91000": want 9 digits`},
		{"no tables", "# nothing\n", "no [[client]] table"},
		{"missing jwks", "[[client]]\nclient-id = \"a\"\norg-number = \"910000004\"\njwks = \"nope.jwks\"\n", "nope.jwks"},
		{"twice", "[[client]]\nclient-id = \"e2e-client\"\norg-number = \"910000004\"\n", `"e2e-client" is given twice`},
	} {
		conf := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
		if err := os.WriteFile(conf, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		res := runCLI(t, nil, "emulate", "--root", root, "--client-id", e2eClient, "--org-number", softhsm.DefaultOrgNumber, "--config", conf)
		e2eWantFail(t, res, exitUsage, tc.want)
		if tc.name != "twice" && !strings.Contains(res.stderr, conf) {
			t.Errorf("%s: the error does not name the file:\n%s", tc.name, res)
		}
	}
}
