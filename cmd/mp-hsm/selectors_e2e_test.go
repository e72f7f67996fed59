//go:build cgo

package main

import (
	"strings"
	"testing"
)

// TestE2EKeyFlagReplacesEnvironment: a key selector on the command line
// replaces the key's variables (on 20aa3dc, MP_HSM_KEY_ID=01 and
// --key-label Signing were combined into "key not found for id 01, label
// Signing"), and a key not found by variables names them.
func TestE2EKeyFlagReplacesEnvironment(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	env := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card")
	signing := runCLI(t, env, "jwk", "--key-id", "02")
	e2eWantOK(t, signing)
	res := runCLI(t, e2eSetenv(env, "MP_HSM_KEY_ID=01"), "jwk", "--key-label", "Signing")
	e2eWantOK(t, res)
	if res.stdout != signing.stdout {
		t.Errorf("with MP_HSM_KEY_ID=01, --key-label Signing gave another key:\n%s\nwant\n%s", res.stdout, signing.stdout)
	}
	res = runCLI(t, e2eSetenv(env, "MP_HSM_KEY_ID=09", "MP_HSM_KEY_LABEL=Signing"), "jwk")
	e2eWantFail(t, res, exitToken, "MP_HSM_KEY_ID=09", "MP_HSM_KEY_LABEL=Signing", "--key-id")
	if strings.Count(res.stderr, "\n") > 4 {
		t.Errorf("the error is long:\n%s", res.stderr)
	}
}
