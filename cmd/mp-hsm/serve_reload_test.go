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

	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// TestServeReloadRefused runs `mp-hsm serve --config` (a PKCS#12 key, a
// socket every local user may reach, one [[client]] for this uid) and
// sends SIGHUP with each file that start refuses (issue 19): the clients
// dropped for a client-id (defect 1: every local uid got any scope), the
// same without socket-mode too (the socket stays 0666), `scopes = []`
// (defect 2), a repeated key (defect 3), a file others can write or
// another user owns (defect 4), a pin-value others can read (defect 12),
// a FIFO and /dev/zero (defect 11). Each is refused and logged, the
// running client keeps deciding, and the first SIGTERM after it ends the
// daemon.
func TestServeReloadRefused(t *testing.T) {
	t.Parallel()
	const password = "reload-p12-password"
	ca, _, p12 := softP12(t, password)
	emu := emulator.NewTest(t, emulator.Config{
		Roots:   []*x509.Certificate{ca.Root},
		Clients: []emulator.Client{{ID: "mine-mp", OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{"test:a", "test:b"}}},
		Logf:    func(string, ...any) {},
	})
	dir, err := os.MkdirTemp("", "mphsm") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	conf := filepath.Join(dir, "mp-hsm.toml")
	head := fmt.Sprintf("p12 = %q\nissuer = %q\ntoken-endpoint = %q\nlisten = [\"unix:%s\"]\n", p12, emu.Issuer(), emu.TokenURL(), sock)
	client := fmt.Sprintf("[[client]]\nname = \"mine\"\nclient-id = \"mine-mp\"\nusers = [%d]\n", os.Getuid())
	goodWith := func(top string) string {
		return head + top + "socket-mode = \"0666\"\n" + client + "scopes = [\"test:a\"]\n"
	}
	good := goodWith("")
	write := func(content string, mode os.FileMode) {
		t.Helper()
		os.Remove(conf)
		if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(conf, mode); err != nil {
			t.Fatal(err)
		}
	}
	write(good, 0o600)

	cmd := testexec.Command(t, 2*time.Minute, binary(t), "serve", "--config", conf)
	cmd.Env = testexec.Env(dir, "MP_HSM_P12_PASSWORD="+password)
	var errOut lockedLog
	cmd.Stderr = &errOut
	proc := testexec.Start(t, cmd)
	uc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	t.Cleanup(uc.CloseIdleConnections)
	post := func(scope, clientID string) serveAnswer {
		f := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
		if clientID != "" {
			f.Set("client_id", clientID)
		}
		return servePost(t, uc, "http://mp-hsm/token", f, "", "")
	}
	waitLog(t, &errOut, "listening")
	// The running client decides: it is served its scope, and neither
	// another scope nor a client it does not have.
	stillDeciding := func(after string) {
		t.Helper()
		if a := post("test:a", ""); a.status != 200 {
			t.Fatalf("%s: this uid's own client: %d %s\n%s", after, a.status, a.Error, errOut.String())
		}
		if a := post("test:b", ""); a.status != 400 || a.Error != "invalid_scope" {
			t.Errorf("%s: a scope outside the client's: %d %q; want 400 invalid_scope", after, a.status, a.Error)
		}
		if a := post("test:a", "nosuch"); a.status != 401 || a.Error != "invalid_client" {
			t.Errorf("%s: a client the daemon has not: %d %q; want 401 invalid_client", after, a.status, a.Error)
		}
	}
	stillDeciding("at start")

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	type refusal struct {
		what    string
		prepare func()
		says    string
	}
	cases := []refusal{
		{"the clients dropped for a client-id", func() { write(head+"socket-mode = \"0666\"\nclient-id = \"mine-mp\"\n", 0o600) },
			"--socket-mode 0666 lets every local user connect"},
		{"the clients and socket-mode dropped", func() { write(head+"client-id = \"mine-mp\"\n", 0o600) },
			"(mode 0666) lets every local user connect, and without clients"},
		{"scopes = []", func() { write(head+"socket-mode = \"0666\"\n"+client+"scopes = []\n", 0o600) },
			`client \"mine\": scopes is given but holds no entry`},
		{"a repeated list", func() { write(head+"socket-mode = \"0666\"\n"+client+"scopes = [\"test:a\"]\nscopes = []\n", 0o600) },
			"client.scopes is set twice"},
		{"a file others can write", func() { write(goodWith("module = \"/tmp/evil.so\"\n"), 0o666) }, "chmod go-w " + conf},
		{"a pin-value others can read", func() { write(goodWith("key = \"pkcs11:token=x?pin-value=1234\"\n"), 0o644) }, "holds a pin-value"},
	}
	if os.Geteuid() == 0 {
		cases = append(cases, refusal{"a file another user owns", func() {
			write(good, 0o600)
			if err := os.Chown(conf, 4321, 4321); err != nil {
				t.Fatal(err)
			}
		}, "is owned by uid 4321"})
	}
	cases = append(cases,
		refusal{"/dev/zero", func() { os.Remove(conf); os.Symlink("/dev/zero", conf) }, "is a device"},
		refusal{"a FIFO", func() { os.Remove(conf); os.Symlink(fifo, conf) }, "is a FIFO"})
	// hup sends SIGHUP and returns what the daemon logged of it: the line
	// of a refusal, or "" when it applied the file.
	hup := func() string {
		t.Helper()
		refused, applied := strings.Count(errOut.String(), "reload refused"), strings.Count(errOut.String(), "configuration reloaded")
		proc.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(20 * time.Second)
		for {
			out := errOut.String()
			switch {
			case strings.Count(out, "reload refused") > refused:
				return out[strings.LastIndex(out, "reload refused"):]
			case strings.Count(out, "configuration reloaded") > applied:
				return ""
			case time.Now().After(deadline):
				t.Fatalf("SIGHUP was neither refused nor applied:\n%s", out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, tc := range cases {
		tc.prepare()
		last := hup()
		if last == "" {
			t.Errorf("%s: SIGHUP applied the file; want it refused", tc.what)
			write(good, 0o600)
			if hup() != "" {
				t.Fatalf("the good file was refused:\n%s", errOut.String())
			}
			continue
		}
		if !strings.Contains(last, tc.says) {
			t.Errorf("%s: the refusal does not say %q:\n%s", tc.what, tc.says, last)
		}
		stillDeciding("after a reload with " + tc.what)
	}
	if strings.Contains(errOut.String(), "1234") {
		t.Errorf("the pin-value is in the daemon's log:\n%s", errOut.String())
	}

	// The last SIGHUP read a FIFO; the first SIGTERM still ends the daemon.
	proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-proc.Done():
		if code := proc.ProcessState.ExitCode(); code != 0 {
			t.Errorf("exit %d after SIGTERM; want 0\n%s", code, errOut.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the daemon did not end on the first SIGTERM\n%s", errOut.String())
	}
}
