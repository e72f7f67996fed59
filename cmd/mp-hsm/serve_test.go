package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
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
	dir, err := os.MkdirTemp("", "mphsm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := binary(t)
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte("tcp-s3cret\n"), 0o600)
	sock := filepath.Join(dir, "s.sock")
	base := []string{"serve", "--token-serial", tok.Serial, "--client-id", client,
		"--issuer", emu.Issuer(), "--token-endpoint", emu.TokenURL()}
	env := append(os.Environ(), "MP_HSM_PIN="+tok.PIN)

	t.Run("usage errors", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"--listen", "tcp:127.0.0.1:0"}, exitUsage, "--client-secret-file"},
			{[]string{"--listen", "tcp:0.0.0.0:0", "--client-secret-file", secretFile}, exitUsage, "--allow-remote"},
			{[]string{"--listen", "udp:x"}, exitUsage, "unix:PATH or tcp:HOST:PORT"},
		} {
			cmd := exec.Command(bin, append(append([]string{}, base...), tc.args...)...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.code || !strings.Contains(string(out), tc.want) {
				t.Errorf("serve %v: %v\n%s\nwant exit %d mentioning %q", tc.args, err, out, tc.code, tc.want)
			}
		}
		cmd := exec.Command(bin, append(append([]string{}, base...), "--listen", "unix:"+sock)...)
		cmd.Env = append(os.Environ(), "MP_HSM_PIN=000000")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitToken || !strings.Contains(string(out), "PIN incorrect") {
			t.Errorf("serve with a wrong PIN: %v\n%s\nwant exit 3 and PIN incorrect", err, out)
		}
		if strings.Contains(string(out), "000000") {
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
		cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, bin}, base...)...)
		cmd.Env = env
		cmd.ExtraFiles = []*os.File{f}
		var errOut lockedLog
		cmd.Stderr = &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		defer cmd.Process.Kill()
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
		a := servePost(t, c, "http://mp-hsm/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"test:a"}}, "", "")
		if a.status != 200 || a.AccessToken == "" {
			t.Fatalf("over the activated socket: %+v\n%s", a, errOut.String())
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("exit: %v\n%s", err, errOut.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no exit after SIGTERM")
		}
	})

	var stderr lockedLog
	cmd := exec.Command(bin, append(append([]string{}, base...), "--listen", "unix:"+sock,
		"--listen", "tcp:127.0.0.1:0", "--client-secret-file", secretFile, "--allowed-scopes", "test:*")...)
	cmd.Env = env
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
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
	m := regexp.MustCompile(`address=tcp:(127\.0\.0\.1:\d+)`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no TCP address in the log:\n%s", stderr.String())
	}
	tcpURL := "http://" + m[1] + "/token"
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"test:a"}}

	a := servePost(t, unix, "http://mp-hsm/token", form, "", "")
	if a.status != 200 || a.AccessToken == "" || a.TokenType != "Bearer" {
		t.Fatalf("unix: %+v", a)
	}
	b := servePost(t, http.DefaultClient, tcpURL, form, client, "tcp-s3cret")
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
	case err := <-exited:
		if err != nil {
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
	if logs := stderr.String(); strings.Contains(logs, a.AccessToken) || strings.Contains(logs, "tcp-s3cret") || strings.Contains(logs, tok.PIN+"\n") {
		t.Error("the log holds a token, the secret or the PIN")
	}
}
