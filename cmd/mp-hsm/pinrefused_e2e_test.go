//go:build cgo

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/p11spy"
)

// TestServePINRefusedWait: with --pin-refused wait, a PIN the token
// refuses at start leaves the daemon up but not ready, saying why and what
// to do on /readyz, after exactly one C_Login: under Kubernetes, a
// container that exited would be restarted and present the PIN again,
// each replica spending the token's tries. Without it (the default, exit)
// serve exits 3, as the systemd unit's RestartPreventExitStatus expects.
func TestServePINRefusedWait(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	emu := fx.emulator(t)
	dir := shortDir(t)
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(e2eWrongPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	spy := p11spy.Path(t)
	spyEnv := func(log string) []string {
		return e2eSetenv(fx.env(t, fx.wrongPINTok, p11spy.Env(fx.wrongPINTok.Module, log)...), "MP_HSM_PIN", "MP_HSM_MODULE="+spy, "MP_HSM_PIN_FILE="+pinFile)
	}
	args := []string{"--token-label", "e2e-wrong-pin", "--client-id", e2eClient, "--issuer", emu.Issuer(), "--token-endpoint", emu.TokenURL()}
	logins := func(log string) int { return p11spy.Counts(p11spy.Read(t, log))["C_Login"] }

	// A value it does not know: refused before the module is loaded.
	badLog := filepath.Join(dir, "bad.log")
	res := runCLIWith(t, cliOpts{env: spyEnv(badLog), timeout: time.Minute},
		append([]string{"serve", "--listen", "unix:" + filepath.Join(dir, "bad.sock"), "--pin-refused", "later"}, args...)...)
	e2eWantFail(t, res, exitUsage, `--pin-refused "later"`, "exit", "wait")
	if n := logins(badLog); n != 0 {
		t.Errorf("%d C_Login calls before the usage error, want 0", n)
	}

	waitLog := filepath.Join(dir, "wait.log")
	d := daemonStart(t, e2eSetenv(spyEnv(waitLog), "MP_HSM_PIN_REFUSED=wait"), "tcp-secret-9b1f20", nil, args...)
	deadline := time.Now().Add(20 * time.Second)
	var status int
	var body []byte
	for {
		select {
		case err := <-d.exited:
			d.exited <- err
			t.Fatalf("serve --pin-refused wait exited on a refused PIN: %v\n%s", err, d.stderr)
		default:
		}
		status, body, _ = d.get("/readyz")
		if status == 503 && strings.Contains(string(body), "login refused") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never said the login was refused: %d %s\n%s", status, body, d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"CKR_PIN_INCORRECT", "not retried", "fix the PIN source", "restart"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/readyz lacks %q: %s", want, body)
		}
	}
	// Up, not ready, and the PIN not presented again: token requests get
	// 503 and cause no login.
	if status, _, err := d.get("/healthz"); status != 200 {
		t.Errorf("/healthz: %d %v", status, err)
	}
	if status, body, err := d.post(map[string][]string{"grant_type": {"client_credentials"}, "scope": {e2eScopeRead}}, "", ""); status != 503 || err != nil {
		t.Errorf("a token request while the PIN is refused: %d %s %v", status, body, err)
	}
	time.Sleep(2 * time.Second) // the reconnect loop's first tries would fall here
	select {
	case err := <-d.exited:
		d.exited <- err
		t.Fatalf("serve exited: %v\n%s", err, d.stderr)
	default:
	}
	if n := logins(waitLog); n != 1 {
		t.Errorf("%d C_Login calls, want exactly 1", n)
	}
	if !strings.Contains(d.stderr.String(), "refused the login") || strings.Contains(d.stderr.String(), e2eWrongPIN) {
		t.Errorf("the log should say the login was refused, without the PIN:\n%s", d.stderr)
	}
	if err := d.stop(); err != nil {
		t.Errorf("serve after SIGTERM: %v\n%s", err, d.stderr)
	}
	if st := emu.Stats(); st.TokenRequests != 0 {
		t.Errorf("%d token requests with a refused PIN", st.TokenRequests)
	}

	// The default: exit 3, one C_Login.
	exitLog := filepath.Join(dir, "exit.log")
	res = runCLIWith(t, cliOpts{env: spyEnv(exitLog), timeout: time.Minute},
		append([]string{"serve", "--listen", "unix:" + filepath.Join(dir, "exit.sock")}, args...)...)
	e2eWantFail(t, res, exitToken, "PIN incorrect", "not retried")
	if n := logins(exitLog); n != 1 {
		t.Errorf("serve (exit): %d C_Login calls, want exactly 1", n)
	}
}
