//go:build cgo

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/p11shim"
)

// TestE2EProgramNameForP11Kit: p11-kit's module options enable-in and
// disable-in name programs by the base name of the process executable, as
// glibc gives it to the modules a process loads
// (program_invocation_short_name). The README tells users to keep a noisy
// module out of mp-hsm with "disable-in: mp-hsm": the binary, a Go program
// with cgo, must show modules that name. The shim records the name it sees.
func TestE2EProgramNameForP11Kit(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	env, calls := e2eShim(t, fx, p11shim.Options{})
	res := runCLI(t, env, "list")
	if res.code != 0 {
		t.Fatalf("list through the shim:\n%s", res)
	}
	data, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "progname=mp-hsm\n") {
		t.Errorf("the module sees another program name than mp-hsm, so disable-in: mp-hsm would not match:\n%s", data)
	}
}

// TestE2EModuleOutputHeldUnlessNoToken: what a module writes on stderr
// while it loads (the shim, standing for tpm2-pkcs11 behind p11-kit's
// proxy) is not shown when the token asked for is found, and is shown after
// the error when none is, since it may say why.
func TestE2EModuleOutputHeldUnlessNoToken(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	const noise = "p11shim: ERROR: Could not initialize tpm ctx: 0x5"
	env, _ := e2eShim(t, fx, p11shim.Options{Noise: noise})
	res := runCLI(t, env, "list")
	if res.code != 0 || strings.Contains(res.stderr, noise) {
		t.Errorf("list with tokens found: want exit 0 and nothing the module wrote on loading:\n%s", res)
	}
	res = runCLI(t, env, "list", "--token-label", "no-such-token")
	if res.code != 0 || !strings.Contains(res.stderr, "while the module loaded") || !strings.Contains(res.stderr, noise) {
		t.Errorf("list that shows no token: want exit 0 and what the module wrote on loading:\n%s", res)
	}
	res = runCLI(t, env, "token", "--token-label", "no-such-token", "--client-id", e2eClient, "--scope", e2eScopeRead,
		"--well-known", "http://127.0.0.1:9/.well-known/oauth-authorization-server")
	e2eWantFail(t, res, exitToken, "no-such-token", "while the module loaded", noise)
}

// TestE2EP11KitDisableIn: a module registered with p11-kit that writes
// errors on stderr (the shim, standing for tpm2-pkcs11) is heard through
// p11-kit's proxy until its module file says "disable-in: mp-hsm", as the
// README's troubleshooting advises; then p11-kit does not load it into
// mp-hsm. The user's p11-kit configuration is in the run's own HOME;
// p11-kit reads none for root, so as root the test is skipped.
func TestE2EP11KitDisableIn(t *testing.T) {
	t.Parallel()
	if os.Geteuid() == 0 {
		t.Skip("p11-kit skips the user configuration in a program running as root")
	}
	fx := e2e(t)
	proxy := "/usr/lib/" + hsm.Multiarch() + "/libp11-kit.so.0" // p11-kit-proxy.so is a link to it
	if _, err := os.Stat(proxy); err != nil {
		t.Skipf("p11-kit is not installed: %v", err)
	}
	shim := p11shim.Build(t)
	const noise = "p11shim: ERROR: standing for tpm2-pkcs11's errors"
	for _, tc := range []struct {
		options string
		heard   bool
	}{
		{"", true},
		{"disable-in: mp-hsm\n", false},
	} {
		home := t.TempDir()
		dir := filepath.Join(home, ".config", "pkcs11", "modules")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "noisy.module"), []byte("module: "+shim+"\n"+tc.options), 0o600); err != nil {
			t.Fatal(err)
		}
		env := fx.env(t, fx.card, append(p11shim.Options{Real: fx.card.Module, Noise: noise}.Env(),
			"HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "MP_HSM_MODULE="+proxy, "MP_HSM_PIN")...)
		// A label no module has: what the modules wrote on loading is
		// shown (TestE2EModuleOutputHeldUnlessNoToken), so it is heard if
		// p11-kit loaded the noisy module.
		res := runCLI(t, env, "list", "--token-label", "no-such-token")
		if heard := strings.Contains(res.stderr, noise); heard != tc.heard {
			t.Errorf("module file %q: the noisy module heard %v, want %v:\n%s", tc.options, heard, tc.heard, res)
		}
	}
}
