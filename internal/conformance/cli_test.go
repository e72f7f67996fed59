//go:build cgo

package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/backends"
	"github.com/mp-hsm/mp-hsm/internal/p11spy"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
)

// wrongPINValue is the wrong PIN the suite presents once per backend;
// the card's is cardWrongPIN (see badPIN).
const wrongPINValue = "Wrong-PIN-e81c3d"

// cardWrongPIN is a wrong PIN of a length the card takes (a CAC PIN has
// at most 8 characters; OpenSC refuses a longer one itself).
const cardWrongPIN = "Wr-9c41d"

// badPIN is the wrong PIN for fx's token.
func (fx *fixture) badPIN() string {
	if fx.r.Card != nil {
		return cardWrongPIN
	}
	return wrongPINValue
}

// exitToken is mp-hsm's exit code for a token, key or PIN problem.
const exitToken = 3

// cliEnv is the environment of an mp-hsm run on fx's backend: testexec's
// minimal one in dir, the union of the backends' Env (p11-kit's proxy
// loads the other backends' modules too), then kv.
func (fx *fixture) cliEnv(dir string, kv ...string) []string {
	return testexec.Env(dir, append(append([]string{}, suite.env...), kv...)...)
}

// runCLI runs mp-hsm with args and env, and fails c if a PIN of the suite
// shows in its output.
func (fx *fixture) runCLI(c *check, env []string, args ...string) testexec.Result {
	c.t.Helper()
	cmd := testexec.Command(c.t, 2*time.Minute, binary(c.t), args...)
	cmd.Env = env
	res := testexec.Run(c.t, cmd)
	for _, pin := range []string{fx.r.PIN, fx.r.SOPIN, fx.badPIN()} {
		if pin != "" && strings.Contains(res.Stdout+res.Stderr, pin) {
			c.fail("a PIN appears in the output of mp-hsm %s", args[0])
		}
	}
	return res
}

// tokenArgs are the arguments of an `mp-hsm token` run on fx's token
// with its default key, against the emulator.
func (fx *fixture) tokenArgs(module string) []string {
	return []string{"token", "--module", module, "--token-label", fx.r.Label, "--token-serial", fx.r.Serial,
		"--client-id", confClient, "--scope", confScope, "--well-known", fx.emu.MetadataURL()}
}

// spied returns the module and the environment entries that put
// pkcs11-spy, logging to log, in front of fx's module. The pkcs11-spy
// backend is a spy already: its log is moved.
func (fx *fixture) spied(log string) (module string, env []string) {
	if fx.r.Module == backends.SpyPath() {
		return fx.r.Module, []string{"PKCS11SPY_OUTPUT=" + log}
	}
	return backends.SpyPath(), p11spy.Env(fx.r.Module, log)
}

// wrongPIN runs `mp-hsm token` with a wrong PIN through pkcs11-spy: exit
// 3, exactly one C_Login.
func (fx *fixture) wrongPIN(c *check) {
	dir := c.t.TempDir()
	log := filepath.Join(dir, "spy.log")
	module, spyEnv := fx.spied(log)
	env := fx.cliEnv(dir, append(spyEnv, "MP_HSM_PIN="+fx.badPIN())...)
	res := fx.runCLI(c, env, fx.tokenArgs(module)...)
	if res.Code != exitToken {
		c.fail("exit %d, want %d: %s", res.Code, exitToken, describe(res))
	}
	counts := p11spy.Counts(p11spy.Read(c.t, log))
	if counts["C_Login"] != 1 {
		c.fail("%d C_Login calls, want exactly 1 (%s)", counts["C_Login"], p11spy.Format(counts))
	}
	c.note("%d PKCS#11 calls, %d C_Login", p11spy.Total(counts), counts["C_Login"])
	c.note("mp-hsm said: %s", strings.TrimSpace(res.Stderr))
	if err := os.Remove(log); err != nil && !os.IsNotExist(err) { // it holds the PIN
		c.fail("%v", err)
	}
}

// describe is a run's command line, exit code and stderr, for a failure
// message that also goes to the results file: never its stdout, which may
// hold an access token.
func describe(res testexec.Result) string {
	return fmt.Sprintf("mp-hsm %s: exit %d; stderr: %s", strings.Join(res.Args[1:], " "), res.Code, strings.TrimSpace(res.Stderr))
}

// stderrNote describes what a run printed on stderr.
func stderrNote(stderr string) string {
	stderr = strings.TrimSpace(stderr)
	if stderr == "" {
		return "nothing on stderr"
	}
	first, _, _ := strings.Cut(stderr, "\n")
	if len(first) > 160 {
		first = first[:160] + "..."
	}
	return fmt.Sprintf("%s on stderr, the first: %s", plural(strings.Count(stderr, "\n")+1, "line"), first)
}

// checkAccessToken fails c unless s is an access token the emulator
// issued to the suite's client.
func (fx *fixture) checkAccessToken(c *check, s string) {
	c.t.Helper()
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(s, claims, func(*jwt.Token) (any, error) { return fx.emu.PublicKey(), nil }); err != nil {
		c.fatal("the access token does not verify with the emulator's key: %v", err)
	}
	if claims["client_id"] != confClient || claims["scope"] != confScope {
		c.fail("access token for client %v scope %v, want %s %s", claims["client_id"], claims["scope"], confClient, confScope)
	}
}

// tokenRun is one whole `mp-hsm token` run.
func (fx *fixture) tokenRun(c *check) {
	dir := c.t.TempDir()
	res := fx.runCLI(c, fx.cliEnv(dir, "MP_HSM_PIN="+fx.r.PIN), fx.tokenArgs(fx.r.Module)...)
	if res.Code != 0 {
		c.fatal("exit %d, want 0: %s", res.Code, describe(res))
	}
	fx.checkAccessToken(c, strings.TrimSpace(res.Stdout))
	c.note("%s", stderrNote(res.Stderr))
}

// serveRun runs `mp-hsm serve` on a unix socket and fetches a token
// through it.
func (fx *fixture) serveRun(c *check) {
	client, proc := fx.startServe(c)
	fx.fetchToken(c, client, proc, "")
	fx.stopServe(c, proc)
}

// startServe starts `mp-hsm serve` on a unix socket in a directory of its
// own, waits for the socket, and returns a client that reaches it.
func (fx *fixture) startServe(c *check) (*http.Client, *testexec.Proc) {
	t := c.t
	dir, err := os.MkdirTemp("", "mphsm") // short: unix socket paths are limited
	if err != nil {
		c.fatal("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	args := []string{"serve", "--listen", "unix:" + sock, "--module", fx.r.Module, "--token-label", fx.r.Label,
		"--token-serial", fx.r.Serial, "--client-id", confClient, "--well-known", fx.emu.MetadataURL()}
	cmd := testexec.Command(t, 2*time.Minute, binary(t), args...)
	cmd.Env = fx.cliEnv(dir, "MP_HSM_PIN="+fx.r.PIN)
	proc := testexec.Start(t, cmd)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-proc.Done():
			c.fatal("serve exited before it listened: %s", describe(proc.Wait()))
		default:
		}
		if time.Now().After(deadline) {
			_, stderr := proc.Output()
			c.fatal("serve made no socket in 30 s; stderr: %s", stderr)
		}
	}
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	return client, proc
}

// fetchToken asks serve for a token (for resource, if not empty: a
// request the cache has not seen, which signs a new grant) and checks it.
func (fx *fixture) fetchToken(c *check, client *http.Client, proc *testexec.Proc, resource string) {
	status, answer, err := postToken(client, resource)
	if err != nil {
		c.fatal("POST /token: %v", err)
	}
	if status != http.StatusOK {
		_, stderr := proc.Output()
		c.fatal("POST /token: %d %s; serve's stderr: %s", status, answer.Error, stderr)
	}
	fx.checkAccessToken(c, answer.AccessToken)
}

// tokenAnswer is the body of serve's answer to POST /token.
type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	Error       string `json:"error"`
}

// postToken posts a token request to serve.
func postToken(client *http.Client, resource string) (int, tokenAnswer, error) {
	var answer tokenAnswer
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {confScope}}
	if resource != "" {
		form.Set("resource", resource)
	}
	resp, err := client.PostForm("http://mp-hsm/token", form)
	if err != nil {
		return 0, answer, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		return resp.StatusCode, answer, fmt.Errorf("%d, body not JSON: %w", resp.StatusCode, err)
	}
	return resp.StatusCode, answer, nil
}

// stopServe ends serve with SIGTERM: exit 0, no PIN in its output.
func (fx *fixture) stopServe(c *check, proc *testexec.Proc) {
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
		c.fatal("%v", err)
	}
	res := proc.Wait()
	if res.Code != 0 {
		c.fail("serve after SIGTERM: exit %d, want 0: %s", res.Code, describe(res))
	}
	for _, pin := range []string{fx.r.PIN, fx.r.SOPIN} {
		if pin != "" && strings.Contains(res.Stdout+res.Stderr, pin) {
			c.fail("the PIN appears in serve's output")
		}
	}
}

// p11kitProxy is the path of p11-kit's proxy module.
func p11kitProxy() string { return "/usr/lib/" + hsm.Multiarch() + "/p11-kit-proxy.so" }

// p11kitNeighbours runs `mp-hsm token` through p11-kit's proxy as a user
// who set up only this token: without the other backends' settings, which
// the modules p11-kit also loads (tpm2-pkcs11 above all) then lack. It
// records what the user sees.
func (fx *fixture) p11kitNeighbours(c *check) {
	dir := c.t.TempDir()
	env := testexec.Env(dir, append(append([]string{}, fx.r.Env...), "MP_HSM_PIN="+fx.r.PIN)...)
	res := fx.runCLI(c, env, fx.tokenArgs(fx.r.Module)...)
	if res.Code != 0 {
		c.fatal("exit %d, want 0: %s", res.Code, describe(res))
	}
	fx.checkAccessToken(c, strings.TrimSpace(res.Stdout))
	c.note("%s", stderrNote(res.Stderr))
	if _, err := os.Stat(filepath.Join(dir, ".tpm2_pkcs11")); err == nil {
		c.note("tpm2-pkcs11 created ~/.tpm2_pkcs11")
	}
}
