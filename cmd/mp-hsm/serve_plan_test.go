//go:build cgo

package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/internal/p11spy"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// nobody is the uid and gid the other caller runs as (setpriv).
const nobody = 65534

// auditLine is the part of an audit line the tests read.
type auditLine struct {
	Peer struct {
		UID     *int   `json:"uid"`
		GID     *int   `json:"gid"`
		PID     int    `json:"pid"`
		Groups  []int  `json:"groups"`
		Address string `json:"address"`
	} `json:"peer"`
	ExeAtAccept string `json:"exe_at_accept"`
	Client      string `json:"client"`
	ClientID    string `json:"client_id"`
	Scope       string `json:"scope"`
	Outcome     string `json:"outcome"`
	Status      int    `json:"status"`
	Error       string `json:"error"`
}

// TestServeClients runs `mp-hsm serve --config` as a process with three
// clients on one SoftHSM2 token (one with a key of its own on it) and the
// emulator: each caller gets the client its uid is admitted to, a caller
// of another uid (setpriv, curl) is refused a client that does not admit
// it, TCP callers need a client's secret, every answer is one audit line
// without a token, and SIGHUP reopens the audit log, refuses a broken
// file and applies a good one.
func TestServeClients(t *testing.T) {
	for _, tool := range []string{"setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (scripts/deps.sh installs it)", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test runs the caller as another uid with setpriv, which needs root")
		}
		t.Skip("needs root, to run a caller as another uid")
	}
	t.Parallel()
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{Label: "serve"}, softhsm.LeafOptions{})
	opsKey := tok.GenerateRSA(t, 2048, softhsm.KeyOptions{Label: "ops", ID: []byte{0x0b}})
	emu := emulator.NewTest(t, emulator.Config{
		Roots: []*x509.Certificate{ca.Root},
		Clients: []emulator.Client{
			{ID: "ledger-mp", OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{"test:a"}},
			{ID: "payroll-mp", OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{"test:b"}},
			{ID: "ops-mp", OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{"test:c"}, Keys: map[string]crypto.PublicKey{"ops-kid": opsKey}},
		},
		Logf: func(string, ...any) {},
	})
	dir, err := os.MkdirTemp("", "mphsm") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the other uid must reach the socket
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	audit := filepath.Join(dir, "audit.jsonl")
	secretFile := filepath.Join(dir, "payroll.secret")
	const secret = "payroll-s3cret+%/="
	os.WriteFile(secretFile, []byte(secret+"\n"), 0o600)
	// The daemon loads OpenSC's pkcs11-spy, which logs every call: the
	// token is logged in once for the three clients and two keys.
	spy, spyLog := p11spy.Path(t), filepath.Join(dir, "spy.log")
	conf := filepath.Join(dir, "mp-hsm.toml")
	config := func(ledgerUsers string) string {
		return fmt.Sprintf(`# the daemon for an organisation
module         = %q
token-serial   = %q
issuer         = %q
token-endpoint = %q
listen         = ["unix:%s", "tcp:127.0.0.1:0"]
socket-mode    = "0666"
audit-log      = %q
max-keys       = 100

[[client]]
name      = "ledger"
client-id = "ledger-mp"
scopes    = ["test:a"]
users     = [%s]

[[client]]
name        = "payroll"
client-id   = "payroll-mp"
scopes      = ["test:b"]
users       = [0]
secret-file = %q

[[client]]
name      = "ops"
client-id = "ops-mp"
groups    = ["root"]
key-label = "ops"
kid       = "ops-kid"
`, spy, tok.Serial, emu.Issuer(), emu.TokenURL(), sock, audit, ledgerUsers, secretFile)
	}
	os.WriteFile(conf, []byte(config(`"nobody"`)), 0o644)

	bin := binary(t)
	env := testexec.Env(dir, append(p11spy.Env(tok.Module, spyLog), "SOFTHSM2_CONF="+tok.Config, "MP_HSM_PIN="+tok.PIN)...)
	cmd := testexec.Command(t, 2*time.Minute, bin, "serve", "--config", conf)
	cmd.Env = env
	var errOut lockedLog
	cmd.Stderr = &errOut
	testexec.Start(t, cmd)
	tcpRE := regexp.MustCompile(`address=tcp:(127\.0\.0\.1:\d+)`)
	var tcpAddr string
	deadline := time.Now().Add(30 * time.Second)
	for tcpAddr == "" {
		if m := tcpRE.FindStringSubmatch(errOut.String()); m != nil {
			if _, err := os.Stat(sock); err == nil {
				tcpAddr = m[1]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not start:\n%s", errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o666 {
		t.Fatalf("socket: %v, mode %v; want 0666 (socket-mode)", err, st.Mode().Perm())
	}

	uc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	form := func(scope string, kv ...string) url.Values {
		f := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
		for i := 0; i+1 < len(kv); i += 2 {
			f.Set(kv[i], kv[i+1])
		}
		return f
	}
	var tokens []string
	want := func(what string, a serveAnswer, status int, code, clientID string) {
		t.Helper()
		if a.status != status || a.Error != code {
			t.Fatalf("%s: %d %q; want %d %q\n%s", what, a.status, a.Error, status, code, errOut.String())
		}
		if a.AccessToken != "" {
			tokens = append(tokens, a.AccessToken)
			if got := tokenClaim(t, a.AccessToken, "client_id"); got != clientID {
				t.Fatalf("%s: a token of client %q; want %q", what, got, clientID)
			}
		}
	}
	// As root (uid 0, group root): admitted to payroll (users) and ops
	// (groups), so it must name one.
	want("root naming no client", servePost(t, uc, "http://mp-hsm/token", form("test:b"), "", ""), 400, "invalid_request", "")
	want("root naming payroll", servePost(t, uc, "http://mp-hsm/token", form("test:b", "client_id", "payroll"), "", ""), 200, "", "payroll-mp")
	want("root naming ops (its own key, by kid)", servePost(t, uc, "http://mp-hsm/token", form("test:c"), "ops", "ignored"), 200, "", "ops-mp")
	want("root naming ledger", servePost(t, uc, "http://mp-hsm/token", form("test:a", "client_id", "ledger"), "", ""), 401, "invalid_client", "")
	want("root naming no such client", servePost(t, uc, "http://mp-hsm/token", form("test:a", "client_id", "nosuch"), "", ""), 401, "invalid_client", "")
	want("payroll asking for ledger's scope", servePost(t, uc, "http://mp-hsm/token", form("test:a", "client_id", "payroll"), "", ""), 400, "invalid_scope", "")

	// As nobody: admitted to ledger only.
	asNobodyIn := func(groups string, args ...string) serveAnswer {
		t.Helper()
		grp := []string{"--clear-groups"}
		if groups != "" {
			grp = []string{"--groups", groups}
		}
		c := testexec.Command(t, 30*time.Second, "setpriv", append(append([]string{"--reuid", fmt.Sprint(nobody), "--regid", fmt.Sprint(nobody)}, grp...),
			append([]string{"curl", "-sS", "--unix-socket", sock, "-w", "\n%{http_code}", "http://mp-hsm/token"}, args...)...)...)
		c.Env = env
		res := testexec.Run(t, c)
		body, code, _ := strings.Cut(strings.TrimSpace(res.Stdout), "\n")
		a := serveAnswer{}
		if _, err := fmt.Sscan(code, &a.status); err != nil || json.Unmarshal([]byte(body), &a) != nil {
			t.Fatalf("curl as nobody: %s", res)
		}
		return a
	}
	asNobody := func(args ...string) serveAnswer { t.Helper(); return asNobodyIn("", args...) }
	want("nobody naming no client", asNobody("-d", "grant_type=client_credentials", "-d", "scope=test:a"), 200, "", "ledger-mp")
	want("nobody again (cached)", asNobody("-d", "grant_type=client_credentials", "-d", "scope=test:a"), 200, "", "ledger-mp")
	want("nobody naming payroll", asNobody("-d", "grant_type=client_credentials", "-d", "scope=test:b", "-d", "client_id=payroll"), 401, "invalid_client", "")
	// With the supplementary group root, nobody is admitted to ops too.
	want("nobody in group root naming no client", asNobodyIn("0", "-d", "grant_type=client_credentials", "-d", "scope=test:c"), 400, "invalid_request", "")
	want("nobody in group root naming ops", asNobodyIn("0", "-d", "grant_type=client_credentials", "-d", "scope=test:c", "-d", "client_id=ops"), 200, "", "ops-mp")

	// TCP: a client's name and secret.
	tc := &http.Client{Timeout: 20 * time.Second}
	want("TCP with payroll's secret", servePost(t, tc, "http://"+tcpAddr+"/token", form("test:b"), url.QueryEscape("payroll"), url.QueryEscape(secret)), 200, "", "payroll-mp")
	want("TCP as ledger with payroll's secret", servePost(t, tc, "http://"+tcpAddr+"/token", form("test:a"), "ledger", url.QueryEscape(secret)), 401, "invalid_client", "")

	if n := p11spy.Counts(p11spy.Read(t, spyLog))["C_Login"]; n != 1 {
		t.Errorf("C_Login was called %d times; want 1 (one login for every client and key)", n)
	}

	lines := readAudit(t, audit)
	// One line per request, but root's refusal for "nosuch" comes within
	// a minute of its refusal for ledger: it is summarized, not written.
	wantOutcomes := []string{"refused", "issued", "issued", "refused", "refused", "issued", "cached", "refused", "refused", "cached", "cached", "refused"}
	if len(lines) != len(wantOutcomes) {
		t.Fatalf("audit log: %d lines; want %d (one per request, root's second refusal of a client summarized)", len(lines), len(wantOutcomes))
	}
	for i, l := range lines {
		if l.Outcome != wantOutcomes[i] {
			t.Errorf("audit line %d: outcome %q; want %q: %+v", i+1, l.Outcome, wantOutcomes[i], l)
		}
	}
	if l := lines[5]; l.Peer.UID == nil || *l.Peer.UID != nobody || *l.Peer.GID != nobody || l.Peer.PID <= 0 ||
		filepath.Base(l.ExeAtAccept) != "curl" || l.Client != "ledger" || l.ClientID != "ledger-mp" || l.Scope != "test:a" || l.Status != 200 {
		t.Errorf("audit line of nobody's first request: %+v", l)
	}
	if l := lines[7]; *l.Peer.UID != nobody || l.Error != "invalid_client" || l.Status != 401 {
		t.Errorf("audit line of nobody's refusal: %+v", l)
	}
	if l := lines[9]; l.Peer.UID == nil || *l.Peer.UID != nobody || !slices.Equal(l.Peer.Groups, []int{0}) || l.Client != "ops" {
		t.Errorf("audit line of nobody in group root: %+v", l)
	}
	if l := lines[10]; !strings.HasPrefix(l.Peer.Address, "127.0.0.1:") || l.Client != "payroll" || l.Peer.UID != nil {
		t.Errorf("audit line of the TCP request: %+v", l)
	}
	data, _ := os.ReadFile(audit)
	for _, tk := range tokens {
		if strings.Contains(string(data), tk) || strings.Contains(errOut.String(), tk) {
			t.Fatal("an access token is in the audit log or the daemon's log")
		}
	}
	if strings.Contains(string(data), "eyJ") {
		t.Fatal("the audit log holds a JWT (a token or a grant)")
	}
	for _, s := range []string{secret, url.QueryEscape(secret), tok.PIN} {
		if strings.Contains(string(data), s) {
			t.Fatalf("the audit log holds a secret or the PIN")
		}
	}
	if st, err := os.Stat(audit); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode: %v %v; want 0600", st.Mode().Perm(), err)
	}

	// logrotate renames the file, and the config is broken meanwhile:
	// SIGHUP reopens the audit log, refuses the file and keeps serving.
	os.Rename(audit, audit+".1")
	os.WriteFile(conf, []byte(config(`"nobody"`)+"\n[[client]]\nname = \"bad\"\nusers = [\"no-such-user-here\"]\n"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, &errOut, `reload refused; the running configuration is kept`)
	if !strings.Contains(errOut.String(), `client \"bad\": users: no user \"no-such-user-here\"`) {
		t.Errorf("the refused reload does not say why:\n%s", errOut.String())
	}
	want("nobody after a broken reload", asNobody("-d", "grant_type=client_credentials", "-d", "scope=test:a"), 200, "", "ledger-mp")
	if l := readAudit(t, audit); len(l) != 1 || l[0].Outcome != "cached" {
		t.Errorf("the reopened audit log: %+v; want the one request since", l)
	}
	if l := readAudit(t, audit+".1"); len(l) != len(wantOutcomes) {
		t.Errorf("the rotated audit log has %d lines; want %d", len(l), len(wantOutcomes))
	}

	// A good file is applied: ledger now admits root too.
	os.WriteFile(conf, []byte(config(`"nobody", "root"`)), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, &errOut, `configuration reloaded; ready`)
	want("root naming ledger after the reload", servePost(t, uc, "http://mp-hsm/token", form("test:a", "client_id", "ledger"), "", ""), 200, "", "ledger-mp")

	// Metrics per client.
	resp, err := uc.Get("http://mp-hsm/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var metrics strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		metrics.WriteString(sc.Text() + "\n")
	}
	for _, m := range []string{
		`mphsm_client_requests_total{client="ledger",outcome="cached"} 3`,
		`mphsm_client_refusals_total{client="ledger",reason="not_admitted"} 1`,
		`mphsm_client_refusals_total{client="payroll",reason="not_admitted"} 1`,
		`mphsm_client_refusals_total{client="(none)",reason="ambiguous_client"} 2`,
		`mphsm_client_refusals_total{client="(none)",reason="bad_credentials"} 1`,
		`mphsm_client_refusals_total{client="payroll",reason="invalid_scope"} 1`,
	} {
		if !strings.Contains(metrics.String(), m+"\n") {
			t.Errorf("metrics: no %s", m)
		}
	}
}

// tokenClaim returns a claim of an access token (a JWT), unverified.
func tokenClaim(t *testing.T, tok, name string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("the access token is not a JWT")
	}
	data, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(data, &claims); err != nil {
		t.Fatal(err)
	}
	s, _ := claims[name].(string)
	return s
}

// readAudit reads an audit log's lines; each must be JSON.
func readAudit(t *testing.T, path string) []auditLine {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []auditLine
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		var l auditLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, l)
	}
	return out
}

// waitLog waits for the daemon's log to hold s.
func waitLog(t *testing.T, l *lockedLog, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(l.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not log %q:\n%s", s, l.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
