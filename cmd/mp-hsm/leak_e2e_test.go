//go:build cgo

package main

// The secret-leak check of the command: every command, at debug level in
// text and JSON, on its good and error paths, with sentinel secrets, and a
// search of everything it printed that is not the secret it was asked for.
// The library's part is TestLeakSentinels in package grant.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
)

// leakProxy is a reverse proxy in front of an emulator that records every
// grant posted to it (the form's assertion), every token it answers (the
// token response's access_token, or an Altinn token) and every bearer token
// sent to it, and passes requests and answers on unchanged.
type leakProxy struct {
	*httptest.Server
	emu *emulator.Server

	mu      sync.Mutex
	grants  []string
	tokens  []string
	answers int
}

func newLeakProxy(t testing.TB, emu *emulator.Server) *leakProxy {
	t.Helper()
	target, err := url.Parse(emu.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := &leakProxy{emu: emu}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target) },
		ModifyResponse: func(resp *http.Response) error {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			p.recordAnswer(body)
			resp.Body = io.NopCloser(bytes.NewReader(body))
			return err // a dropped answer stays dropped
		},
		// A failed or dropped answer from the emulator is dropped here too.
		ErrorHandler: func(http.ResponseWriter, *http.Request, error) { panic(http.ErrAbortHandler) },
	}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if v, err := url.ParseQuery(string(body)); err == nil && v.Get("assertion") != "" {
			p.add(&p.grants, v.Get("assertion"))
		}
		if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			p.add(&p.tokens, b)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *leakProxy) recordAnswer(body []byte) {
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	p.mu.Lock()
	p.answers++
	p.mu.Unlock()
	if json.Unmarshal(body, &tr) == nil && tr.AccessToken != "" {
		p.add(&p.tokens, tr.AccessToken)
	} else if s := strings.TrimSpace(string(body)); strings.HasPrefix(s, "eyJ") && strings.Count(s, ".") == 2 {
		p.add(&p.tokens, s)
	}
}

func (p *leakProxy) add(list *[]string, v string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v != "" && !slices.Contains(*list, v) {
		*list = append(*list, v)
	}
}

// args are the token-command arguments that send the grant through the
// proxy: the issuer stays the emulator's (the grant's aud).
func (p *leakProxy) args(cmd string, extra ...string) []string {
	return append([]string{cmd, "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead,
		"--issuer", p.emu.Issuer(), "--token-endpoint", p.URL + "/token"}, extra...)
}

// leakRun is one run and what its stdout holds by design (a token or a
// grant, for the commands that exist to print one): stderr may hold no
// secret, nor stdout beside that.
type leakRun struct {
	res     cliResult
	allowed []string
}

// TestLeakCLI runs every command with the sentinel PIN (the card's PIN,
// from MP_HSM_PIN, a PIN file, or a --key URI's pin-value in MP_HSM_KEY):
// token and grant at --log-level debug in text and JSON (token with and
// without --altinn), list, doctor, inspect, jwk, the --help of every
// command, and the error paths of a wrong PIN, a refused grant, 503s and
// dropped answers. The proxy keeps every grant and token that crossed the
// wire. The test fails if the PIN, any grant or token, or the signature part
// of any grant or token, appears in a log line, an error message, a --help
// text, or the output of a command that does not exist to print it.
func TestLeakCLI(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	var emuLog lockedLog
	cfg := fx.emulatorConfig(t)
	cfg.Logf = emuLog.logf
	emu := emulator.NewTest(t, cfg)
	proxy := newLeakProxy(t, emu)
	dir := t.TempDir()
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(sentinelPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var runs []leakRun
	run := func(env []string, args ...string) cliResult {
		t.Helper()
		res := runCLI(t, env, args...)
		runs = append(runs, leakRun{res: res})
		return res
	}
	// runSecret is run for a command whose stdout is the secret it makes:
	// that secret is a sentinel for every other output.
	runSecret := func(env []string, args ...string) cliResult {
		t.Helper()
		res := runCLI(t, env, args...)
		if res.code != 0 {
			t.Fatalf("want success:\n%s", res)
		}
		runs = append(runs, leakRun{res: res, allowed: []string{strings.TrimSpace(res.stdout)}})
		return res
	}
	debug := func(format string, args ...string) []string {
		return append([]string{"--log-level", "debug", "--log-format", format}, args...)
	}
	env := fx.env(t, fx.card)

	// The good paths, at debug level.
	var tok, grantJWT string
	for _, format := range []string{"text", "json"} {
		tok = strings.TrimSpace(runSecret(env, debug(format, proxy.args("token")...)...).stdout)
		runSecret(env, debug(format, proxy.args("token", "--output", "json")...)...)
		runSecret(env, debug(format, proxy.args("token", "--altinn", "--altinn-exchange", proxy.URL+"/authentication/api/v1/exchange/maskinporten")...)...)
		grantJWT = strings.TrimSpace(runSecret(env, debug(format, "grant", "--token-label", "e2e-card", "--client-id", e2eClient,
			"--scope", e2eScopeRead, "--issuer", emu.Issuer(), "--token-endpoint", emu.TokenURL())...).stdout)
		runSecret(fx.env(t, fx.card, "MP_HSM_PIN", "MP_HSM_PIN_FILE="+pinFile), debug(format, proxy.args("token")...)...)
		runSecret(fx.env(t, fx.card, "MP_HSM_PIN", "MP_HSM_KEY=pkcs11:token=e2e-card;id=%01?pin-value="+sentinelPIN),
			debug(format, "token", "--client-id", e2eClient, "--scope", e2eScopeRead, "--issuer", emu.Issuer(), "--token-endpoint", proxy.URL+"/token")...)
		for _, args := range [][]string{
			{"list", "--token-label", "e2e-card"},
			{"list", "--token-label", "e2e-card", "--output", "json"},
			{"jwk", "--token-label", "e2e-card"},
			proxy.args("doctor"),
			proxy.args("doctor", "--output", "json"),
			{"inspect", grantJWT},
			{"inspect", "--output", "json", grantJWT},
			{"inspect", tok},
			{"inspect", "--output", "json", tok},
		} {
			if res := run(env, debug(format, args...)...); res.code != 0 {
				t.Errorf("want success:\n%s", res)
			}
		}
	}

	// A run with a HOME and TMPDIR of its own, which must stay empty:
	// nothing is cached on disk.
	fresh := t.TempDir()
	runSecret(e2eSetenv(env, "HOME="+fresh, "TMPDIR="+fresh), debug("text", proxy.args("token")...)...)
	runSecret(e2eSetenv(env, "HOME="+fresh, "TMPDIR="+fresh), debug("text", proxy.args("token", "--altinn", "--altinn-exchange", proxy.URL+"/authentication/api/v1/exchange/maskinporten")...)...)

	// --help of every command, and of the command itself, with every
	// place a PIN can come from set to the sentinel.
	helpEnv := fx.env(t, fx.card, "MP_HSM_PIN_FILE="+pinFile, "MP_HSM_KEY=pkcs11:token=e2e-card;id=%01?pin-value="+sentinelPIN)
	top := run(helpEnv, "--help")
	cmds := leakCommands(top.stdout)
	if len(cmds) < 8 || !slices.Contains(cmds, "token") {
		t.Fatalf("found commands %v in mp-hsm --help", cmds)
	}
	for _, c := range cmds {
		if res := run(helpEnv, c, "--help"); res.code != 0 || res.stdout == "" {
			t.Errorf("want help:\n%s", res)
		}
	}

	// The error paths.
	wrong := fx.env(t, fx.wrongPINTok, "MP_HSM_PIN="+e2eWrongPIN)
	for _, format := range []string{"text", "json"} {
		res := run(wrong, debug(format, "token", "--token-label", "e2e-wrong-pin", "--client-id", e2eClient, "--scope", e2eScopeRead,
			"--issuer", emu.Issuer(), "--token-endpoint", proxy.URL+"/token")...)
		e2eWantFail(t, res, exitToken, "PIN incorrect")
		res = run(wrong, debug(format, "doctor", "--token-label", "e2e-wrong-pin")...)
		if res.code == 0 {
			t.Errorf("doctor with a wrong PIN: want a failure:\n%s", res)
		}
		res = run(env, debug(format, proxy.args("token", "--scope", "e2e:admin")...)...)
		e2eWantFail(t, res, exitRefused, "MP-200")
		res = run(env, debug(format, proxy.args("doctor", "--scope", "e2e:admin")...)...)
		if res.code != exitRefused {
			t.Errorf("doctor with a refused grant: want exit %d:\n%s", exitRefused, res)
		}
		emu.FailNext(3, http.StatusServiceUnavailable)
		res = run(env, debug(format, proxy.args("token")...)...)
		e2eWantFail(t, res, exitUnavailable, "HTTP 503")
		emu.DropNext(3)
		res = run(env, debug(format, proxy.args("token")...)...)
		e2eWantFail(t, res, exitUnavailable)
		emu.FailNext(1, http.StatusServiceUnavailable)
		runSecret(env, debug(format, proxy.args("token", "--altinn", "--altinn-exchange", proxy.URL+"/authentication/api/v1/exchange/maskinporten")...)...)
	}

	// The search.
	proxy.mu.Lock()
	grants, tokens := slices.Clone(proxy.grants), slices.Clone(proxy.tokens)
	proxy.mu.Unlock()
	for _, r := range runs {
		for _, s := range r.allowed {
			if strings.HasPrefix(s, "{") { // --output json
				var tj tokenJSON
				if json.Unmarshal([]byte(s), &tj) == nil {
					s = tj.AccessToken
				}
			}
			if strings.Count(s, ".") == 2 && !slices.Contains(grants, s) && !slices.Contains(tokens, s) {
				grants = append(grants, s) // a grant from `mp-hsm grant`, never sent
			}
		}
	}
	if len(grants) < 20 || len(tokens) < 15 {
		t.Fatalf("recorded %d grants and %d tokens: the check would prove little", len(grants), len(tokens))
	}
	t.Logf("%d runs; searched for the PINs, %d grants and %d tokens", len(runs), len(grants), len(tokens))
	secrets := []leakSentinel{{"the PIN", sentinelPIN}, {"the wrong PIN", e2eWrongPIN}}
	secrets = append(secrets, leakJWTSentinels("grant", grants)...)
	secrets = append(secrets, leakJWTSentinels("token", tokens)...)
	leakSearch(t, "the emulator's log", emuLog.String(), secrets, nil)
	leakScanDir(t, fresh, nil, secrets)
	leakScanDir(t, leakStoreDir(t, env), []string{"*"}, secrets)
	for _, r := range runs {
		where := "mp-hsm " + strings.Join(r.res.args, " ")
		leakSearch(t, where+": stderr", r.res.stderr, secrets, nil)
		leakSearch(t, where+": stdout", r.res.stdout, secrets, r.allowed)
	}
}

// lockedLog collects log lines from several goroutines.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, format+"\n", args...)
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// leakSentinel is a secret the leak check looks for.
type leakSentinel struct{ name, value string }

// leakJWTSentinels returns each JWT and the signature part of each.
func leakJWTSentinels(kind string, jwts []string) []leakSentinel {
	var out []leakSentinel
	for i, j := range jwts {
		out = append(out, leakSentinel{fmt.Sprintf("%s %d", kind, i), j})
		if parts := strings.Split(j, "."); len(parts) == 3 && len(parts[2]) >= 16 {
			out = append(out, leakSentinel{fmt.Sprintf("the signature of %s %d", kind, i), parts[2]})
		}
	}
	return out
}

// leakSearch fails t for each sentinel in text, naming it without printing
// it. The values of allowed, and their parts, are what text is meant to
// hold, and are skipped.
func leakSearch(t *testing.T, where, text string, secrets []leakSentinel, allowed []string) {
	t.Helper()
	for _, a := range allowed {
		text = strings.ReplaceAll(text, a, "<allowed>")
	}
	for _, s := range secrets {
		if strings.Contains(text, s.value) {
			t.Errorf("%s appears in %s", s.name, where)
		}
	}
}

// leakCommands returns the command names listed under COMMANDS in the
// output of mp-hsm --help.
func leakCommands(help string) []string {
	var cmds []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "COMMANDS:"):
			in = true
		case in && strings.TrimSpace(line) == "":
			return cmds
		case in:
			if f := strings.Fields(line); len(f) > 0 {
				cmds = append(cmds, strings.TrimSuffix(f[0], ","))
			}
		}
	}
	return cmds
}

// TestLeakServe is the daemon's part of the leak check: `mp-hsm serve` at
// --log-level debug, in text and in JSON, with the sentinel PIN and a
// sentinel client secret, serves good requests (Maskinporten and Altinn
// tokens, cached and not), refuses bad ones (a wrong secret in HTTP Basic
// and in the form, a scope Maskinporten refuses, 503s, dropped answers),
// reloads on SIGHUP and drains on SIGTERM; a daemon with a wrong PIN
// exits. The test fails if the PIN, the secrets, any grant or token that
// crossed the wire (or its signature part), or a personal identification
// number in clear, appears in the daemon's logs, its /metrics, /healthz or
// /readyz, or an error answer.
func TestLeakServe(t *testing.T) {
	t.Parallel()
	const (
		secret      = "Sentinel-Secret-5d0c2e"
		wrongSecret = "Sentinel-Wrong-Secret-91ab"
	)
	fx := e2e(t)
	var emuLog lockedLog
	cfg := fx.emulatorConfig(t)
	cfg.Logf = emuLog.logf
	emu := emulator.NewTest(t, cfg)
	proxy := newLeakProxy(t, emu)
	pid := e2ePID(t)
	texts := map[string]string{}
	var homes, stores []string // the daemons' HOME (and TMPDIR), and SoftHSM2 stores
	form := func(kv ...string) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	for _, format := range []string{"text", "json"} {
		denv := fx.env(t, fx.card)
		stores = append(stores, leakStoreDir(t, denv))
		d := startDaemon(t, denv, secret, []string{"--log-level", "debug", "--log-format", format},
			"--token-label", "e2e-card", "--client-id", e2eClient, "--issuer", emu.Issuer(), "--token-endpoint", proxy.URL+"/token",
			"--altinn-exchange", proxy.URL+"/authentication/api/v1/exchange/maskinporten")
		n := 0
		ask := func(f url.Values, user, pass string, want int) {
			t.Helper()
			status, body, err := d.post(f, user, pass)
			if err != nil || (want != 0 && status != want) {
				t.Errorf("%s: POST /token %v: %d %s %v, want %d", format, f, status, body, err, want)
			}
			if status != http.StatusOK {
				n++
				texts[fmt.Sprintf("%s daemon: error answer %d (HTTP %d)", format, n, status)] = string(body)
			} else {
				var tr struct {
					AccessToken string `json:"access_token"`
				}
				json.Unmarshal(body, &tr)
				proxy.add(&proxy.tokens, tr.AccessToken)
			}
		}
		ask(form("scope", e2eScopeRead), "", "", http.StatusOK)
		ask(form("scope", e2eScopeRead), "", "", http.StatusOK)
		ask(form("scope", e2eScopeRead, "altinn", "true"), "", "", http.StatusOK)
		ask(form("scope", e2eScopeRead, "pid", pid), "", "", 0)
		ask(form("scope", e2eScopeRead), e2eClient, wrongSecret, http.StatusUnauthorized)
		noBasic := form("scope", e2eScopeRead, "client_id", e2eClient, "client_secret", wrongSecret)
		req, _ := http.NewRequest(http.MethodPost, d.base+"/token", strings.NewReader(noBasic.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if resp, err := d.http.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			texts[format+" daemon: answer to a wrong client_secret in the form"] = string(b)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s: a wrong client_secret in the form: HTTP %d, want 401", format, resp.StatusCode)
			}
		}
		ask(form("scope", "e2e:admin"), "", "", 0)
		emu.FailNext(3, http.StatusServiceUnavailable)
		ask(form("scope", e2eScopeWrite), "", "", 0)
		emu.DropNext(3)
		ask(form("scope", e2eScopeRead+" "+e2eScopeWrite), "", "", 0)
		ask(form("scope", e2eScopeWrite, "consumer_org", e2eDelegatingOrg), "", "", http.StatusOK)
		for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
			status, body, err := d.get(path)
			if err != nil || status != http.StatusOK {
				t.Errorf("%s: GET %s: %d %v", format, path, status, err)
			}
			texts[format+" daemon: "+path] = string(body)
		}
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		ask(form("scope", e2eScopeRead), "", "", http.StatusOK)
		if err := d.stop(); err != nil {
			t.Errorf("%s: serve after SIGTERM: %v", format, err)
		}
		texts[format+" daemon: stderr"] = d.stderr.String()
		homes = append(homes, d.home)
		if !strings.Contains(d.stderr.String(), "SIGHUP") {
			t.Errorf("%s: the daemon logged nothing of the SIGHUP at debug level:\n%s", format, d.stderr)
		}
	}

	// A wrong PIN: the daemon says so and exits.
	d := daemonStart(t, fx.env(t, fx.wrongPINTok, "MP_HSM_PIN="+e2eWrongPIN), secret, []string{"--log-level", "debug"},
		"--token-label", "e2e-wrong-pin", "--client-id", e2eClient, "--issuer", emu.Issuer(), "--token-endpoint", proxy.URL+"/token")
	select {
	case err := <-d.exited:
		d.exited <- err
		if err == nil || !strings.Contains(d.stderr.String(), "PIN incorrect") {
			t.Errorf("serve with a wrong PIN: %v, want a failure saying PIN incorrect:\n%s", err, d.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Error("serve with a wrong PIN did not exit")
	}
	texts["wrong-PIN daemon: stderr"] = d.stderr.String()
	texts["the emulator's log"] = emuLog.String()

	proxy.mu.Lock()
	grants, tokens := slices.Clone(proxy.grants), slices.Clone(proxy.tokens)
	proxy.mu.Unlock()
	if len(grants) < 12 || len(tokens) < 6 {
		t.Fatalf("recorded %d grants and %d tokens: the check would prove little", len(grants), len(tokens))
	}
	t.Logf("searched %d texts for the PINs, the secrets, %d grants and %d tokens", len(texts), len(grants), len(tokens))
	secrets := []leakSentinel{{"the PIN", sentinelPIN}, {"the wrong PIN", e2eWrongPIN}, {"the client secret", secret}, {"the wrong client secret", wrongSecret},
		{"the personal identification number, in clear", pid}}
	secrets = append(secrets, leakJWTSentinels("grant", grants)...)
	secrets = append(secrets, leakJWTSentinels("token", tokens)...)
	for where, text := range texts {
		leakSearch(t, where, text, secrets, nil)
	}
	for _, h := range homes {
		leakScanDir(t, h, []string{"secret"}, secrets)
	}
	for _, st := range stores {
		leakScanDir(t, st, []string{"*"}, secrets)
	}
}

// leakStoreDir returns the SoftHSM2 store directory of env.
func leakStoreDir(t *testing.T, env []string) string {
	t.Helper()
	for _, kv := range env {
		if conf, ok := strings.CutPrefix(kv, "SOFTHSM2_CONF="); ok {
			return filepath.Dir(conf)
		}
	}
	t.Fatal("no SOFTHSM2_CONF in the environment")
	return ""
}

// leakScanDir fails t for every file under dir whose name is not in
// allowed, and for every sentinel in the contents of a file. A file named
// in allowed is an input the test wrote (such as the secret file) and is
// not searched; "*" allows every name, and every file is searched.
func leakScanDir(t *testing.T, dir string, allowed []string, secrets []leakSentinel) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		if slices.Contains(allowed, de.Name()) {
			return nil
		}
		if !slices.Contains(allowed, "*") {
			t.Errorf("%s was written: nothing is meant to be cached on disk", path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s.value)) {
				t.Errorf("%s appears in the file %s", s.name, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
