//go:build cgo

package backends

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mp-hsm/mp-hsm/hsm"
)

// SpyPath returns the path of OpenSC's pkcs11-spy module on this machine
// (opensc-pkcs11 installs it in the multiarch library directory).
func SpyPath() string { return "/usr/lib/" + hsm.Multiarch() + "/pkcs11-spy.so" }

// StartSpy starts SoftHSM2 reached through OpenSC's pkcs11-spy: a token in
// the process's SoftHSM2 store (see softToken). The spy forwards every
// call to the module PKCS11SPY names and logs it, with its arguments, to
// PKCS11SPY_OUTPUT, here dir/pkcs11-spy.log. Both are read when the spy
// is loaded, so a process has one spy, and another program can be spied
// on by running it with other values of both.
func StartSpy(dir string) (*Running, error) {
	spy := SpyPath()
	if _, err := os.Stat(spy); err != nil {
		return nil, fmt.Errorf("pkcs11-spy: %w (apt-get install opensc-pkcs11)", err)
	}
	tok, release, err := softToken("conf-spy")
	if err != nil {
		return nil, fmt.Errorf("pkcs11-spy: %w", err)
	}
	r, err := softRunning("pkcs11-spy", spy, tok, release, "opensc-pkcs11", "softhsm2")
	if err != nil {
		return nil, fmt.Errorf("pkcs11-spy: %w", err)
	}
	r.Env = append(r.Env, "PKCS11SPY="+tok.Module, "PKCS11SPY_OUTPUT="+filepath.Join(dir, "pkcs11-spy.log"))
	r.Notes = []string{
		"pkcs11-spy logs every call with its arguments, the PIN of C_Login included: use it to diagnose, with PKCS11SPY_OUTPUT in a private place, never in production.",
	}
	return r, nil
}
