//go:build cgo

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/p11shim"
)

// TestServeFilesRefused: the files serve is given follow the one file rule
// (internal/safefile) at start. A config that another user can change
// (issue 19, defect 4), a FIFO or /dev/zero as --config or --audit-log
// (defect 11: a hang, or 4.6 GB read), a symbolic link as the audit log, a
// pin-value in a config others can read (defect 12), an empty list and a
// repeated key (defects 2 and 3) are each refused at once with exit 2,
// saying what to do.
func TestServeFilesRefused(t *testing.T) {
	t.Parallel()
	dir := shortDir(t)
	file := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(file("audit-target", "", 0o600), link)
	client := "[[client]]\nname = \"a\"\nusers = [\"0\"]\n"
	good := file("good.toml", "client-id = \"c\"\n", 0o600)
	type refusal struct {
		name   string
		config string
		args   []string
		want   []string
	}
	cases := []refusal{
		{"world-writable config", file("world.toml", "client-id = \"c\"\nmodule = \"/tmp/evil.so\"\n", 0o666), nil,
			[]string{"can be changed by group and others (mode 0666)", "chmod go-w " + filepath.Join(dir, "world.toml")}},
		{"group-writable config", file("group.toml", "client-id = \"c\"\n", 0o660), nil, []string{"by its group (mode 0660)", "chmod go-w"}},
		{"audit-log /dev/zero", good, []string{"--audit-log", "/dev/zero"}, []string{"/dev/zero: is a device"}},
		{"audit-log link", good, []string{"--audit-log", link}, []string{link + ": is a symbolic link"}},
		{"pin-value others can read", file("pin.toml", "client-id = \"c\"\nkey = \"pkcs11:token=t?PIN-Value=1234\"\n", 0o644), nil,
			[]string{"holds a pin-value, and group or others can read the file (mode 0644)", "chmod 600"}},
		{"scopes = []", file("scopes.toml", client+"scopes = []\n", 0o600), nil, []string{`client "a": scopes is given but holds no entry`}},
		{"users = []", file("users.toml", "[[client]]\nname = \"a\"\nusers = []\ngroups = [\"0\"]\n", 0o600), nil, []string{`client "a": users is given but holds no entry`}},
		{"allowed-scopes = []", file("allowed.toml", "client-id = \"c\"\nallowed-scopes = []\n", 0o600), nil, []string{"allowed-scopes: [] holds no entry"}},
		{"repeated list", file("rl.toml", "client-id = \"c\"\nallowed-scopes = [\"a\"]\nallowed-scopes = []\n", 0o600), nil, []string{"allowed-scopes is set twice"}},
		{"repeated scalar", file("rs.toml", "client-id = \"c\"\nmax-keys = 1\nmax-keys = 2\n", 0o600), nil, []string{"line 3", "max-keys", "already been defined"}},
		{"repeated list in a client", file("rcl.toml", client+"scopes = [\"a\"]\nscopes = []\n", 0o600), nil, []string{"client.scopes is set twice"}},
		{"repeated list in the second client", file("rcl2.toml", client+"scopes = [\"a\"]\n"+strings.Replace(client, `"a"`, `"b"`, 1)+"users = [\"1\"]\n", 0o600), nil, []string{"client.users is set twice"}},
		{"repeated scalar in a client", file("rcs.toml", client+"name = \"b\"\n", 0o600), nil, []string{"client.name", "already been defined"}},
		{"inline client tables", file("inline.toml", "client = [{name = \"a\", users = [\"0\"]}, {name = \"b\", users = [\"0\"]}]\n", 0o600), nil, []string{"an inline array of tables; write [[client]] tables"}},
	}
	if os.Geteuid() == 0 {
		other := file("other.toml", "client-id = \"c\"\n", 0o600)
		if err := os.Chown(other, 4321, 4321); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, refusal{"config another user owns", other, nil, []string{"is owned by uid 4321, who is neither root nor", "chown root " + other}})
	}
	// Last, as they hung before: a FIFO blocks the open, /dev/zero never ends.
	cases = append(cases, []refusal{
		{"config FIFO", fifo, nil, []string{fifo + ": is a FIFO"}},
		{"config /dev/zero", "/dev/zero", nil, []string{"/dev/zero: is a device"}},
		{"audit-log FIFO", good, []string{"--audit-log", fifo}, []string{fifo + ": is a FIFO"}},
	}...)
	for _, tc := range cases {
		args := append([]string{"mp-hsm", "serve", "--config", tc.config, "--p12", filepath.Join(dir, "none.p12"), "--env", "test",
			"--listen", "unix:" + filepath.Join(dir, "s.sock")}, tc.args...)
		type result struct {
			code int
			err  string
		}
		done := make(chan result, 1)
		go func() {
			var out, errOut bytes.Buffer
			code := run(args, strings.NewReader(""), &out, &errOut)
			done <- result{code, errOut.String()}
		}()
		select {
		case r := <-done:
			if r.code != exitUsage {
				t.Errorf("%s: exit %d, %s\nwant exit %d", tc.name, r.code, r.err, exitUsage)
				continue
			}
			for _, w := range tc.want {
				if !strings.Contains(r.err, w) {
					t.Errorf("%s: %s\ndoes not say %q", tc.name, r.err, w)
				}
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: serve still runs after 20 s; want it refused at once", tc.name)
		}
	}
	// A pin-value in a file only its owner can read is not refused for it:
	// serve goes on, to the missing PKCS#12 file.
	ownPIN := file("own-pin.toml", "client-id = \"c\"\nkey = \"pkcs11:token=t?pin-value=1234\"\n", 0o600)
	var out, errOut bytes.Buffer
	run([]string{"mp-hsm", "serve", "--config", ownPIN, "--p12", filepath.Join(dir, "none.p12"), "--env", "test",
		"--listen", "unix:" + filepath.Join(dir, "s.sock")}, strings.NewReader(""), &out, &errOut)
	if strings.Contains(errOut.String(), "pin-value") || !strings.Contains(errOut.String(), "none.p12") {
		t.Errorf("a pin-value in a 0600 config: %s\nwant the missing PKCS#12 file reported", errOut.String())
	}
}

// TestUnsafePINAndSecretFiles: a PIN, PKCS#12 password or client secret
// file that another user can change is refused (exit 2, with the chmod or
// chown that fixes it), and a PIN from it is never presented to the token.
func TestUnsafePINAndSecretFiles(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	emu := fx.emulator(t)
	dir := shortDir(t)
	unsafe := map[string]string{}
	for name, mode := range map[string]os.FileMode{"world": 0o666, "group": 0o620} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(sentinelPIN+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		unsafe[p] = "chmod go-w " + p
	}
	if os.Geteuid() == 0 {
		p := filepath.Join(dir, "other")
		if err := os.WriteFile(p, []byte(sentinelPIN+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chown(p, 4321, 4321)
		unsafe[p] = "chown root " + p
	}
	for path, fix := range unsafe {
		env, calls := e2eShim(t, fx, p11shim.Options{}, "MP_HSM_PIN", "MP_HSM_PIN_FILE="+path)
		res := runCLI(t, env, e2eTokenArgs(emu)...)
		e2eWantFail(t, res, exitUsage, "PIN file "+path, fix)
		if n := p11shim.Count(t, calls, "C_Login"); n != 0 {
			t.Errorf("PIN file %s: %d C_Login calls; want none", path, n)
		}
		res = runCLI(t, fx.env(t, fx.card), "serve", "--listen", "tcp:127.0.0.1:0", "--client-secret-file", path,
			"--token-label", "e2e-card", "--client-id", e2eClient, "--env", "test")
		e2eWantFail(t, res, exitUsage, "--client-secret-file "+path, fix)
		res = runCLI(t, nil, "jwk", "--p12", filepath.Join(dir, "none.p12"), "--p12-password-file", path)
		e2eWantFail(t, res, exitUsage, "--p12-password-file", fix)
	}
}
