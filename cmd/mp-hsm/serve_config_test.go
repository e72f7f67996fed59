package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeConfigRefused checks that a mistake in a --config file stops
// serve at once (exit 2), naming the file, the client and the field.
func TestServeConfigRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, file, want string
	}{
		{"syntax", "listen = [\"unix:/x\"\n", "line 1: expected a comma"},
		{"unknown option", "pin = \"1234\"\n", `"pin" is not a serve option`},
		{"global option", "log-level = \"debug\"\n", `"log-level" is not a serve option`},
		{"config in config", "config = \"/x\"\n", `"config" is not a serve option`},
		{"wrong type", "max-keys = \"many\"\n", "max-keys: want an integer, not a string"},
		{"bad duration", "refresh-margin = \"soon\"\n", "refresh-margin: want a duration"},
		{"list of numbers", "allowed-scopes = [1]\n", "allowed-scopes: want strings, not an integer"},
		{"client field", "[[client]]\nname = \"ledger\"\nuser = [\"a\"]\n", `client "ledger": unknown field "user"`},
		{"client type", "[[client]]\nname = \"ledger\"\nusers = \"a\"\n", `client "ledger": users: want a list`},
		{"client name", "[[client]]\nusers = [\"a\"]\n", "client 1: name is missing"},
		{"client table", "client = \"x\"\n", "client: want [[client]] tables"},
		{"client-id beside clients", "client-id = \"x\"\n[[client]]\nname = \"a\"\nusers = [\"0\"]\n", "--client-id is given too"},
		{"key-id", "[[client]]\nname = \"a\"\nusers = [\"0\"]\nkey-id = \"zz\"\n", `client "a": key-id "zz": want the CKA_ID in hex`},
		{"unknown group", "[[client]]\nname = \"a\"\ngroups = [\"no-such-group-here\"]\n", `client "a": groups: no group "no-such-group-here"`},
		{"nobody admitted", "[[client]]\nname = \"a\"\n", `client "a" admits nobody`},
		{"socket-mode without clients", "socket-mode = \"0666\"\n", "--socket-mode 0666 lets every local user connect"},
		{"socket-mode", "socket-mode = \"0777\"\n[[client]]\nname = \"a\"\nusers = [\"0\"]\n", "--socket-mode \"0777\""},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
		os.WriteFile(path, []byte(tc.file), 0o600)
		var out, errOut bytes.Buffer
		code := run([]string{"mp-hsm", "serve", "--config", path, "--p12", filepath.Join(dir, "none.p12"), "--listen", "unix:" + filepath.Join(dir, "s.sock")},
			strings.NewReader(""), &out, &errOut)
		if code != exitUsage || !strings.Contains(errOut.String(), path) && !strings.Contains(errOut.String(), "--") || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%s: exit %d, %s\nwant exit %d naming the file and saying %q", tc.name, code, errOut.String(), exitUsage, tc.want)
		}
	}
}

// TestServeConfigFlagsWin checks that a flag wins over the same option in
// the file: the file's socket-mode would be refused, the flag's is not,
// and serve goes on to open the key (which does not exist here).
func TestServeConfigFlagsWin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte("socket-mode = \"0777\"\nclient-id = \"from-file\"\n"), 0o600)
	var out, errOut bytes.Buffer
	p12 := filepath.Join(dir, "none.p12")
	code := run([]string{"mp-hsm", "serve", "--config", path, "--socket-mode", "0600", "--p12", p12, "--env", "test",
		"--listen", "unix:" + filepath.Join(dir, "s.sock")}, strings.NewReader(""), &out, &errOut)
	if code == exitOK || strings.Contains(errOut.String(), "socket-mode") || !strings.Contains(errOut.String(), "none.p12") {
		t.Errorf("exit %d, %s\nwant the flag's socket mode taken and the missing PKCS#12 file reported", code, errOut.String())
	}
}
