//go:build cgo

package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/testexec"
)

// TestServeRefusesEmptyListOptions: a list flag of serve that is given but
// holds no entry once split at commas and spaces ("--allowed-scopes ,",
// which urfave/cli reads as ["", ""]; its variable set to "," or "") stops
// serve at start with exit 2 and a message naming the flag, instead of
// reading as "no list", which would allow every scope. The module does not
// exist: nothing of the key is touched before the check.
func TestServeRefusesEmptyListOptions(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	dir := shortDir(t)
	base := []string{"serve", "--module", filepath.Join(dir, "no-such-module.so"), "--client-id", "c",
		"--issuer", "http://127.0.0.1:9/", "--token-endpoint", "http://127.0.0.1:9/token"}
	listen := []string{"--listen", "unix:" + filepath.Join(dir, "s.sock")}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"allowed-scopes comma", append([]string{"--allowed-scopes", ","}, listen...), nil, "--allowed-scopes (or MP_HSM_ALLOWED_SCOPES) is given but holds no entry"},
		{"allowed-scopes space", append([]string{"--allowed-scopes", " "}, listen...), nil, "--allowed-scopes (or MP_HSM_ALLOWED_SCOPES) is given but holds no entry"},
		{"allowed-scopes variable", listen, []string{"MP_HSM_ALLOWED_SCOPES=,"}, "--allowed-scopes (or MP_HSM_ALLOWED_SCOPES) is given but holds no entry"},
		{"allowed-scopes empty variable", listen, []string{"MP_HSM_ALLOWED_SCOPES="}, "--allowed-scopes (or MP_HSM_ALLOWED_SCOPES) is given but holds no entry"},
		{"allowed-resources comma", append([]string{"--allowed-resources", ", ,"}, listen...), nil, "--allowed-resources (or MP_HSM_ALLOWED_RESOURCES) is given but holds no entry"},
		{"listen comma", []string{"--listen", ","}, nil, "--listen (or MP_HSM_LISTEN) is given but holds no entry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := testexec.Command(t, 30*time.Second, bin, append(append([]string{}, base...), tc.args...)...)
			cmd.Env = testexec.Env(dir, tc.env...)
			res := testexec.Run(t, cmd)
			if res.Code != exitUsage || !strings.Contains(res.Stderr, tc.want) {
				t.Fatalf("exit %d, want %d and %q on stderr:\n%s", res.Code, exitUsage, tc.want, res.Stderr)
			}
		})
	}
}
