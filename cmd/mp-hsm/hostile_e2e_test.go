//go:build cgo

package main

// The promises an adversarial probe tested (issue 10), each against the
// built binary: a refused PIN is never presented again whatever the driver
// reports, no PIN in argv or in an error, no hang that SIGTERM cannot end,
// bad usage costs no PIN try. The loose driver, the slow card and the
// device error are internal/p11shim in front of the real SoftHSM2.

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/p11shim"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// e2eShim returns the environment that puts the shim, set as o, in front
// of the e2e store holding wrongPINTok, and the file counting C_Login.
func e2eShim(t *testing.T, fx *e2eFixture, o p11shim.Options, kv ...string) ([]string, string) {
	t.Helper()
	shim := p11shim.Build(t)
	o.Real = fx.wrongPINTok.Module
	o.CountFile = filepath.Join(t.TempDir(), "calls")
	env := fx.env(t, fx.wrongPINTok, append(o.Env(), "MP_HSM_MODULE="+shim)...)
	return e2eSetenv(env, kv...), o.CountFile
}

// TestLoosePINRefusalOneLogin: a driver that reports a wrong PIN as
// CKR_FUNCTION_FAILED gets exactly one C_Login, from the token command and
// from the daemon, which exits 3 instead of waiting and logging in again.
func TestLoosePINRefusalOneLogin(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	emu := fx.emulator(t)
	for _, args := range [][]string{
		{"token", "--token-label", "e2e-wrong-pin", "--client-id", e2eClient, "--scope", e2eScopeRead, "--well-known", emu.MetadataURL()},
		{"serve", "--listen", "unix:" + filepath.Join(shortDir(t), "s.sock"), "--token-label", "e2e-wrong-pin", "--client-id", e2eClient,
			"--issuer", emu.Issuer(), "--token-endpoint", emu.TokenURL()},
	} {
		env, calls := e2eShim(t, fx, p11shim.Options{LoginRV: 0x6}, "MP_HSM_PIN="+e2eWrongPIN)
		res := runCLIWith(t, cliOpts{env: env, timeout: time.Minute}, args...)
		e2eWantFail(t, res, exitToken, "refused the login", "CKR_FUNCTION_FAILED", "not presented again")
		if n := p11shim.Count(t, calls, "C_Login"); n != 1 {
			t.Errorf("%s: %d C_Login calls, want exactly 1", args[0], n)
		}
	}
}

// TestDaemonStopsLoggingInAfterLooseRefusal: the daemon is up; a device
// error mid-signature makes it reconnect, and the PIN it then presents
// (the PIN file was changed to a wrong one) is refused loosely. It must
// not log in again: exactly two C_Login calls in 20 seconds, and it says
// why it is not ready.
func TestDaemonStopsLoggingInAfterLooseRefusal(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	emu := fx.emulator(t)
	dir := shortDir(t)
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(sentinelPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env, calls := e2eShim(t, fx, p11shim.Options{LoginRV: 0x6, SignFailAfter: 1}, "MP_HSM_PIN", "MP_HSM_PIN_FILE="+pinFile)
	d := startDaemon(t, env, "tcp-secret-5a0e77", []string{"--log-level", "info"}, "--token-label", "e2e-wrong-pin", "--client-id", e2eClient,
		"--issuer", emu.Issuer(), "--token-endpoint", emu.TokenURL())
	if err := os.WriteFile(pinFile, []byte(e2eWrongPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The probe signature at start was the one the shim allows: this
	// request's signature meets CKR_DEVICE_ERROR, and the daemon reconnects.
	status, _, err := d.post(url.Values{"grant_type": {"client_credentials"}, "scope": {e2eScopeRead}}, "", "")
	if err != nil || status == 200 {
		t.Fatalf("the request whose signature failed: %d %v", status, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(d.stderr.String(), "refused the login") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Until(deadline))
	if n := p11shim.Count(t, calls, "C_Login"); n != 2 {
		t.Errorf("%d C_Login calls in 20 s, want 2 (the good PIN at start, the refused one after the fault):\n%s", n, d.stderr)
	}
	status, body, _ := d.get("/readyz")
	if status == 200 || !strings.Contains(string(body), "login refused") {
		t.Errorf("/readyz after the refusal: %d %s", status, body)
	}
}

// TestSecondSignalEndsAtOnce: a card that takes its time in C_Login holds
// the process in C; the first SIGTERM cannot end it, the second does. When
// the first one finds something else in flight that it can stop (the
// metadata request, which runs beside the login, on a slow machine), the
// command ends at once, with the signal's exit code.
func TestSecondSignalEndsAtOnce(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	emu := fx.emulator(t)
	env, calls := e2eShim(t, fx, p11shim.Options{LoginSleep: 30 * time.Second}, "MP_HSM_PIN="+sentinelPIN)
	cmd := testexec.Command(t, time.Minute, binary(t), "token", "--token-label", "e2e-wrong-pin", "--client-id", e2eClient,
		"--scope", e2eScopeRead, "--well-known", emu.MetadataURL())
	cmd.Env = testexec.Env(t.TempDir(), env...)
	p := testexec.Start(t, cmd)
	deadline := time.Now().Add(20 * time.Second)
	for p11shim.Count(t, calls, "C_Login") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("C_Login was never called")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
		res := p.Wait()
		if res.Code != 128+int(syscall.SIGTERM) || !strings.Contains(res.Stderr, "stopped by terminated") {
			t.Fatalf("ended by the first SIGTERM, but not as stopped by it: %s", res)
		}
		return
	case <-time.After(500 * time.Millisecond):
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("still running 5 s after the second SIGTERM")
	}
	res := p.Wait()
	if res.Code != 128+int(syscall.SIGTERM) || !strings.Contains(res.Stderr, "second terminated: exiting at once") {
		t.Errorf("after two SIGTERMs: %s", res)
	}
}

// TestPINNeverInArgv: a pin-value in the arguments is refused before
// anything runs, also when the environment holds the same URI, and the
// message does not repeat it.
func TestPINNeverInArgv(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	const k = "pkcs11:token=e2e-card;id=%01?pin-value=" + sentinelPIN
	for _, env := range [][]string{nil, {"MP_HSM_KEY=" + k}} {
		for _, args := range [][]string{
			{"serve", "--key", k},
			{"token", "--key=" + k, "--scope", e2eScopeRead},
			{"list", "--key", k},
		} {
			res := runCLI(t, fx.env(t, fx.card, append(env, "MP_HSM_PIN")...), args...)
			e2eWantFail(t, res, exitUsage, "holds a pin-value", "--pin-file")
		}
	}
	// In the environment alone it is allowed (another user cannot read it).
	res := runCLI(t, fx.env(t, fx.card, "MP_HSM_PIN", "MP_HSM_KEY="+k), "jwk")
	e2eWantOK(t, res)
}

// TestRefusedPINValueRedacted: a pin-value that breaks the URI grammar is
// hidden to the end of the URI, '&' and all.
func TestRefusedPINValueRedacted(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	res := runCLI(t, fx.env(t, fx.card, "MP_HSM_PIN", "MP_HSM_KEY=pkcs11:token=x?pin-value=WRONG&tail"), "jwk")
	e2eWantFail(t, res, exitUsage, "pin-value=REDACTED")
	if strings.Contains(res.stderr, "WRONG") || strings.Contains(res.stderr, "tail") {
		t.Errorf("a part of the pin-value is echoed:\n%s", res)
	}
	res = runCLI(t, fx.env(t, fx.card), "token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead,
		"--issuer", "https://user:Pa55word@maskinporten.example/", "--token-endpoint", "https://maskinporten.example/token")
	e2eWantFail(t, res, exitUsage, "REDACTED@", "credentials")
	if strings.Contains(res.stderr, "Pa55word") {
		t.Errorf("URL credentials echoed:\n%s", res)
	}
}

// TestHostileFiles: FIFOs and devices where a file is expected are
// refused at once, each with what it is; nothing blocks or grows.
func TestHostileFiles(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tokenArgs := []string{"token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead, "--env", "test"}
	for _, tc := range []struct {
		env  []string
		args []string
		code int
		want string
	}{
		{[]string{"MP_HSM_MODULE=" + fifo}, tokenArgs, exitToken, "is a FIFO"},
		{[]string{"MP_HSM_PIN", "MP_HSM_PIN_FILE=" + fifo}, tokenArgs, exitToken, "is a FIFO"},
		{[]string{"MP_HSM_PIN", "MP_HSM_PIN_FILE=/dev/zero"}, tokenArgs, exitToken, "is a device"},
		{nil, append(tokenArgs[:1:1], append([]string{"--chain-file", "/dev/zero"}, tokenArgs[1:]...)...), exitUsage, "is a device"},
		{nil, append(tokenArgs[:1:1], append([]string{"--p12", "/dev/zero"}, tokenArgs[1:]...)...), exitToken, "is a device"},
		{nil, []string{"serve", "--listen", "tcp:127.0.0.1:0", "--client-secret-file", "/dev/zero", "--token-label", "e2e-card",
			"--client-id", e2eClient, "--env", "test"}, exitUsage, "is a device"},
		{nil, []string{"serve", "--listen", "tcp:127.0.0.1:0", "--client-secret-file", fifo, "--token-label", "e2e-card",
			"--client-id", e2eClient, "--env", "test"}, exitUsage, "is a FIFO"},
	} {
		res := runCLIWith(t, cliOpts{env: fx.env(t, fx.card, tc.env...), timeout: 30 * time.Second}, tc.args...)
		e2eWantFail(t, res, tc.code, tc.want, "give a regular file")
	}
}

// TestBadUsageCostsNoPINTry: everything that can be checked without the
// token exits 2 before the module is loaded: no C_Login with a wrong PIN.
func TestBadUsageCostsNoPINTry(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	base := []string{"token", "--token-label", "e2e-wrong-pin", "--client-id", e2eClient, "--scope", e2eScopeRead}
	for _, tc := range []struct {
		extra []string
		want  string
	}{
		{[]string{"--env", "bogus"}, `--env "bogus"`},
		{[]string{"--env", "test", "--alg", "none"}, `unsupported algorithm "none"`},
		{[]string{"--env", "test", "--client-id", "a b"}, `--client-id "a b"`},
		{[]string{"--env", "test", "--timeout", "0s"}, "--timeout 0s"},
		{[]string{"--env", "test", "--lifetime", "1500ms"}, "whole seconds"},
		{[]string{"--issuer", "ftp://x/", "--token-endpoint", "https://x/token"}, "Environment.Issuer"},
	} {
		env, calls := e2eShim(t, fx, p11shim.Options{}, "MP_HSM_PIN="+e2eWrongPIN)
		res := runCLI(t, env, append(base, tc.extra...)...)
		e2eWantFail(t, res, exitUsage, tc.want)
		if n := p11shim.Count(t, calls, "C_Login"); n != 0 {
			t.Errorf("%v: %d C_Login calls before the usage error", tc.extra, n)
		}
	}
}

// TestUnusableSecretFiles: a PIN or secret file with nothing but newlines,
// or more than one line, is refused without a login.
func TestUnusableSecretFiles(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	emu := fx.emulator(t)
	dir := shortDir(t)
	for name, content := range map[string]string{"two-newlines": "\n\n", "crlf-only": "\r\n", "two-lines": "1234\n5678\n", "nul": "12\x0034"} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		env, calls := e2eShim(t, fx, p11shim.Options{}, "MP_HSM_PIN", "MP_HSM_PIN_FILE="+path)
		res := runCLI(t, env, e2eTokenArgs(emu)...)
		e2eWantFail(t, res, exitToken, "PIN file "+path)
		if n := p11shim.Count(t, calls, "C_Login"); n != 0 {
			t.Errorf("PIN file %q: %d C_Login calls", content, n)
		}
		res = runCLI(t, fx.env(t, fx.card), "serve", "--listen", "tcp:127.0.0.1:0", "--client-secret-file", path,
			"--token-label", "e2e-card", "--client-id", e2eClient, "--env", "test")
		e2eWantFail(t, res, exitUsage, "--client-secret-file "+path)
	}
}

// shortDir is a temporary directory with a short path, for unix sockets
// (108 bytes at most) and files a test names in messages.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mph")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestExpiredCertificateIsATokenProblem: an expired certificate is a
// problem with the key (exit 3), not bad usage.
func TestExpiredCertificateIsATokenProblem(t *testing.T) {
	t.Parallel()
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{Label: "Authentication"},
		softhsm.LeafOptions{NotBefore: now.AddDate(-1, 0, -2), NotAfter: now.AddDate(0, 0, -2)})
	res := runCLI(t, []string{"SOFTHSM2_CONF=" + tok.Config, "MP_HSM_MODULE=" + tok.Module, "MP_HSM_PIN=" + tok.PIN},
		"grant", "--token-label", tok.Label, "--client-id", e2eClient, "--scope", e2eScopeRead, "--env", "test")
	e2eWantFail(t, res, exitToken, "expired at", "renew it")
}

// TestAlwaysAuthenticateKeyWarns: choosing the card's signing key, which
// asks for the PIN before every signature, works and says what it is.
func TestAlwaysAuthenticateKeyWarns(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	res := runCLI(t, fx.env(t, fx.card), "grant", "--token-label", "e2e-card", "--key-id", "02", "--client-id", e2eClient,
		"--scope", e2eScopeRead, "--env", "test")
	if res.code != 0 || strings.Count(res.stdout, ".") != 2 {
		t.Fatalf("grant with the signing key: %s", res)
	}
	if !strings.Contains(res.stderr, "asks for the PIN before every signature") || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 {
		t.Errorf("want one warning line about CKA_ALWAYS_AUTHENTICATE:\n%s", res)
	}
}

// TestServeListenerConfigErrors: a listener the user got wrong is a
// configuration error, exit 2, named before the token is opened.
func TestServeListenerConfigErrors(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	dir := shortDir(t)
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret-5a0e77a1b2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"serve", "--token-label", "e2e-card", "--client-id", e2eClient, "--env", "test"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "unix:" + file}, "exists and is not a socket"},
		{[]string{"--listen", "unix:" + filepath.Join(dir, "s"), "--socket-group", "no-such-group-mphsm"}, "no-such-group-mphsm"},
		{[]string{"--listen", "tcp:127.0.0.1:99999", "--client-secret-file", secret}, `port "99999"`},
	} {
		res := runCLI(t, fx.env(t, fx.card), append(append([]string{}, base...), tc.args...)...)
		e2eWantFail(t, res, exitUsage, tc.want)
	}
}

// TestServeSocketInUse: a socket another daemon holds, or a TCP port in
// use, is a configuration error, exit 2, which the unit's
// RestartPreventExitStatus stops on (on 20aa3dc, exit 1: systemd restarted
// it in a loop).
func TestServeSocketInUse(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	dir := shortDir(t)
	sock := filepath.Join(dir, "held.sock")
	held, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	tcpHeld, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpHeld.Close()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"serve", "--token-label", "e2e-card", "--client-id", e2eClient, "--env", "test"}
	res := runCLI(t, fx.env(t, fx.card), append(base, "--listen", "unix:"+sock)...)
	e2eWantFail(t, res, exitUsage, "another process listens on "+sock)
	res = runCLI(t, fx.env(t, fx.card), append(base, "--listen", "tcp:"+tcpHeld.Addr().String(), "--client-secret-file", secret)...)
	e2eWantFail(t, res, exitUsage, "address already in use")
}
