//go:build cgo

package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

type serveAnswer struct {
	status      int
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Error       string `json:"error"`
}

func servePost(t *testing.T, c *http.Client, u string, form url.Values, user, pass string) serveAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	a := serveAnswer{status: resp.StatusCode}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("POST %s: %d, body not JSON: %v", u, resp.StatusCode, err)
	}
	return a
}

// TestServeCommand runs `mp-hsm serve` as a process against SoftHSM2 and
// the emulator: a unix socket and a TCP port, SIGHUP, and SIGTERM draining
// a request in flight.
func TestServeCommand(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{Label: "serve"}, softhsm.LeafOptions{})
	const client = "serve-client"
	emu := emulator.NewTest(t, emulator.Config{
		Roots:   []*x509.Certificate{ca.Root},
		Clients: []emulator.Client{{ID: client, OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{"test:a", "test:b"}}},
		Logf:    func(string, ...any) {},
	})
	dir, err := os.MkdirTemp("", "mphsm") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := binary(t)
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte("tcp-s3cret-5a0e77\n"), 0o600)
	sock := filepath.Join(dir, "s.sock")
	base := []string{"serve", "--module", tok.Module, "--token-serial", tok.Serial, "--client-id", client,
		"--issuer", emu.Issuer(), "--token-endpoint", emu.TokenURL()}
	// The module is named: nothing depends on which modules this machine
	// has (see TestServeNoTokenInModule for the default module).
	env := testexec.Env(dir, "SOFTHSM2_CONF="+tok.Config, "MP_HSM_PIN="+tok.PIN)
	run := func(t *testing.T, env []string, args ...string) testexec.Result {
		t.Helper()
		cmd := testexec.Command(t, time.Minute, bin, args...)
		cmd.Env = env
		return testexec.Run(t, cmd)
	}

	t.Run("usage errors", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"--listen", "tcp:127.0.0.1:0"}, exitUsage, "--client-secret-file"},
			{[]string{"--listen", "tcp:0.0.0.0:0", "--client-secret-file", secretFile}, exitUsage, "--allow-remote"},
			{[]string{"--listen", "udp:x"}, exitUsage, "unix:PATH or tcp:HOST:PORT"},
			{[]string{"--listen", "unix:" + sock, "--audit-failure", "ignore"}, exitUsage, `--audit-failure "ignore": want refuse`},
			{[]string{"--listen", "unix:" + sock, "--allowed-hosts", "evil.example:80"}, exitUsage, "AllowedHosts"},
		} {
			res := run(t, env, append(slices.Clone(base), tc.args...)...)
			if res.Code != tc.code || !strings.Contains(res.Stderr, tc.want) {
				t.Errorf("serve %v: %s\nwant exit %d mentioning %q", tc.args, res, tc.code, tc.want)
			}
		}
		res := run(t, testexec.Setenv(env, "MP_HSM_PIN=000000"), append(slices.Clone(base), "--listen", "unix:"+sock)...)
		if res.Code != exitToken || !strings.Contains(res.Stderr, "PIN incorrect") {
			t.Errorf("serve with a wrong PIN: %s\nwant exit 3 and PIN incorrect", res)
		}
		if strings.Contains(res.Stdout+res.Stderr, "000000") {
			t.Error("the PIN is in the output")
		}
	})

	t.Run("socket activation", func(t *testing.T) {
		path := filepath.Join(dir, "act.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		f, err := ln.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// As systemd does: the socket is fd 3, LISTEN_PID is the daemon's
		// pid (the shell's, which exec keeps).
		cmd := testexec.Command(t, time.Minute, "/bin/sh", append([]string{"-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, bin}, base...)...)
		cmd.Env = env
		cmd.ExtraFiles = []*os.File{f}
		var errOut lockedLog
		cmd.Stderr = &errOut
		p := testexec.Start(t, cmd)
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
		a := servePost(t, c, "http://mp-hsm/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"test:a"}}, "", "")
		if a.status != 200 || a.AccessToken == "" {
			t.Fatalf("over the activated socket: %+v\n%s", a, errOut.String())
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.Done():
			if err := p.Err(); err != nil {
				t.Fatalf("exit: %v\n%s", err, errOut.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no exit after SIGTERM")
		}
	})

	var stderr lockedLog
	cmd := testexec.Command(t, 2*time.Minute, bin, append(slices.Clone(base), "--listen", "unix:"+sock,
		"--listen", "tcp:127.0.0.1:0", "--client-secret-file", secretFile, "--allowed-scopes", "test:*")...)
	cmd.Env = env
	cmd.Stderr = &stderr
	p := testexec.Start(t, cmd)
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("serve's stderr:\n%s", stderr.String())
		}
	})
	unix := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := unix.Get("http://mp-hsm/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not get ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v, mode %v; want 0600", err, fi.Mode())
	}
	// Each listener logs its address when it is up; the unix socket may
	// answer before the TCP line is written.
	tcpRE := regexp.MustCompile(`address=tcp:(127\.0\.0\.1:\d+)`)
	m := tcpRE.FindStringSubmatch(stderr.String())
	for ; m == nil; m = tcpRE.FindStringSubmatch(stderr.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no TCP address in the log:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	tcpURL := "http://" + m[1] + "/token"
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"test:a"}}

	a := servePost(t, unix, "http://mp-hsm/token", form, "", "")
	if a.status != 200 || a.AccessToken == "" || a.TokenType != "Bearer" {
		t.Fatalf("unix: %+v", a)
	}
	b := servePost(t, http.DefaultClient, tcpURL, form, client, "tcp-s3cret-5a0e77")
	if b.AccessToken != a.AccessToken {
		t.Fatalf("tcp: %+v, want the cached token", b)
	}
	if c := servePost(t, http.DefaultClient, tcpURL, form, "", ""); c.status != 401 || c.Error != "invalid_client" {
		t.Fatalf("tcp without credentials: %+v", c)
	}
	if c := servePost(t, unix, "http://mp-hsm/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"other:x"}}, "", ""); c.Error != "invalid_scope" {
		t.Fatalf("scope outside --allowed-scopes: %+v", c)
	}

	// SIGHUP: logs in again, keeps the cache (the key is the same).
	cmd.Process.Signal(syscall.SIGHUP)
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "configuration reloaded") {
		if time.Now().After(deadline) {
			t.Fatal("no reload after SIGHUP")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c := servePost(t, unix, "http://mp-hsm/token", form, "", ""); c.AccessToken != a.AccessToken {
		t.Fatal("SIGHUP dropped the cache")
	}
	if n := emu.Stats().Issued; n != 2 { // one here, one in "socket activation"
		t.Fatalf("%d tokens issued, want 2", n)
	}

	// SIGTERM while a request waits for Maskinporten: it is answered, then
	// the process exits 0 within 10 seconds.
	emu.SetLatency(700 * time.Millisecond)
	slow := make(chan serveAnswer, 1)
	go func() {
		slow <- servePost(t, unix, "http://mp-hsm/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"test:b"}}, "", "")
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
		if err := p.Err(); err != nil {
			t.Fatalf("serve exited with %v after SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not exit within 10 s of SIGTERM")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("draining took %s", d)
	}
	if s := <-slow; s.status != 200 || s.AccessToken == "" {
		t.Fatalf("the request in flight at SIGTERM got %+v", s)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Error("the socket is still there after exit")
	}
	if logs := stderr.String(); strings.Contains(logs, a.AccessToken) || strings.Contains(logs, "tcp-s3cret-5a0e77") || strings.Contains(logs, tok.PIN+"\n") {
		t.Error("the log holds a token, the secret or the PIN")
	}
}

// TestServeNoTokenInModule: `mp-hsm serve` with a module that holds no
// token at all says so in one line naming the module and the flags that
// choose another, and keeps waiting; SIGTERM still ends it at once. Once
// with the module named, once with the default module, deliberately: the
// test computes which module the default is on this machine.
func TestServeNoTokenInModule(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	softhsmModule, err := softhsm.ModulePath()
	if err != nil {
		t.Fatal(err)
	}
	defaultModule, err := hsm.FindDefaultModule()
	if err != nil {
		t.Fatalf("no default module on this machine (make deps installs OpenSC): %v", err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		module string
		from   string
	}{
		{"named", []string{"--module", softhsmModule}, softhsmModule, "flag"},
		{"default", nil, defaultModule, "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, err := os.MkdirTemp("", "mphsm")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			// An empty SoftHSM2 store: SoftHSM2, alone or behind the p11-kit
			// proxy, shows only its uninitialised free slot.
			tokens := filepath.Join(dir, "tokens")
			conf := filepath.Join(dir, "softhsm2.conf")
			if err := os.Mkdir(tokens, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"serve", "--listen", "unix:" + filepath.Join(dir, "s.sock"), "--client-id", "c",
				"--issuer", "http://127.0.0.1:9/", "--token-endpoint", "http://127.0.0.1:9/token"}, tc.args...)
			cmd := testexec.Command(t, time.Minute, bin, args...)
			cmd.Env = testexec.Env(dir, "SOFTHSM2_CONF="+conf, "MP_HSM_PIN=123456")
			p := testexec.Start(t, cmd)
			want := regexp.MustCompile(`msg="the module has no token in any slot; still waiting for one\. If the token is behind another module, choose it with --module PATH \(MP_HSM_MODULE\) or module-path in --key" module=` +
				regexp.QuoteMeta(tc.module) + ` module_from=` + tc.from + `\n`)
			deadline := time.Now().Add(30 * time.Second)
			for _, stderr := p.Output(); !want.MatchString(stderr); _, stderr = p.Output() {
				select {
				case <-p.Done():
					t.Fatalf("serve exited instead of waiting for a token: %s", p.Wait())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("no line saying the module has no token after 30 s; stderr:\n%s", stderr)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if _, stderr := p.Output(); strings.Count(stderr, "the module has no token") != 1 {
				t.Errorf("said more than once:\n%s", stderr)
			}
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.Done():
				if res := p.Wait(); res.Code != 0 {
					t.Errorf("after SIGTERM: %s", res)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("serve did not exit within 10 s of SIGTERM")
			}
		})
	}
}
