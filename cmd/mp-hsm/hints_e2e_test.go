//go:build cgo

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// TestE2EUsageHints: the stumbles of issue 22, each answered with what to
// do. On 20aa3dc: --pin got "flag provided but not defined" alone; usage
// errors pointed to mp-hsm --help; a PKCS#12 password file was "PIN
// file"; a base URL as --well-known got "HTTP 404"; a module typo got no
// suggestion; the default module without a token was not named; an
// unknown kid hinted "check KeyID".
func TestE2EUsageHints(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	dir := t.TempDir()
	srv := fx.emulator(t)
	env := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card")

	res := runCLI(t, env, "token", "--pin", "1234", "--scope", e2eScopeRead)
	e2eWantFail(t, res, exitUsage, "flag provided but not defined: -pin", "--pin-file FILE, or MP_HSM_PIN", "(see mp-hsm token --help)")

	res = runCLI(t, nil, "serve", "--config", filepath.Join(dir, "missing.toml"))
	e2eWantFail(t, res, exitUsage, "missing.toml", "(see mp-hsm serve --help)")

	p12, empty := filepath.Join(dir, "key.p12"), filepath.Join(dir, "password")
	for _, f := range []string{p12, empty} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	res = runCLI(t, nil, "token", "--p12", p12, "--p12-password-file", empty, "--client-id", e2eClient, "--scope", e2eScopeRead)
	e2eWantFail(t, res, exitUsage, "password file "+empty+": is empty")
	if strings.Contains(res.stderr, "PIN") {
		t.Errorf("a PKCS#12 password file is called a PIN file:\n%s", res)
	}

	base := strings.TrimSuffix(srv.MetadataURL(), ".well-known/oauth-authorization-server")
	res = runCLI(t, env, "token", "--client-id", e2eClient, "--scope", e2eScopeRead, "--well-known", base)
	e2eWantFail(t, res, exitUsage, "HTTP 404", "ends in /.well-known/oauth-authorization-server")

	module, err := softhsm.ModulePath()
	if err != nil {
		t.Fatal(err)
	}
	typo := strings.Replace(module, "softhsm2.so", "softhsm.so", 1)
	if typo == module {
		t.Fatalf("SoftHSM2's module %s is not named libsofthsm2.so", module)
	}
	res = runCLI(t, e2eSetenv(env, "MP_HSM_MODULE="+typo), "list")
	e2eWantFail(t, res, exitToken, "PKCS#11 module not found", "did you mean "+module+"?")

	// An empty SoftHSM2 store behind the default module.
	tokens := filepath.Join(dir, "tokens")
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	defaultModule, err := hsm.FindDefaultModule()
	if err != nil {
		t.Fatalf("no default module on this machine (make deps installs OpenSC): %v", err)
	}
	res = runCLI(t, []string{"SOFTHSM2_CONF=" + conf, "MP_HSM_PIN=" + sentinelPIN}, "token", "--client-id", e2eClient, "--scope", e2eScopeRead, "--env", "test")
	e2eWantFail(t, res, exitToken, "the module was "+defaultModule+" (the first default module found)", "--module PATH")

	res = runCLI(t, env, e2eTokenArgs(srv, "--kid", "not-registered")...)
	e2eWantFail(t, res, exitRefused, "--kid", "mp-hsm admin keys list")
	if strings.Contains(res.stderr, "KeyID") {
		t.Errorf("the hint names a Go field:\n%s", res)
	}
}

// TestServeConfigConflictNamesFile: a conflict between an option of the
// config file and a flag names the file (on 20aa3dc it did not).
func TestServeConfigConflictNamesFile(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	conf := filepath.Join(t.TempDir(), "mp-hsm.toml")
	if err := os.WriteFile(conf, []byte("env = \"test\"\nclient-id = \""+e2eClient+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := runCLI(t, fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card"), "serve", "--config", conf,
		"--listen", "unix:"+filepath.Join(shortDir(t), "s.sock"), "--well-known", "http://127.0.0.1:9/.well-known/oauth-authorization-server")
	e2eWantFail(t, res, exitUsage, "choose Maskinporten one way", "env from config "+conf, "(see mp-hsm serve --help)")
}
