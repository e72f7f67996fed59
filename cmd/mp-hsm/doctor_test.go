//go:build cgo

package main

import (
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// doctorResult is what a run of the binary printed and its exit code.
type doctorResult struct {
	stdout, stderr string
	code           int
}

// doctorExec runs the binary as runCLI does, with stdin as its input.
func doctorExec(t testing.TB, env []string, stdin string, args ...string) doctorResult {
	t.Helper()
	r := runCLIWith(t, cliOpts{env: env, stdin: stdin}, args...)
	return doctorResult{stdout: r.stdout, stderr: r.stderr, code: r.code}
}

// doctorTokenEnv is the environment that points the binary at tok.
func doctorTokenEnv(tok *softhsm.Token) []string {
	return []string{"SOFTHSM2_CONF=" + tok.Config, "MP_HSM_MODULE=" + tok.Module, "MP_HSM_PIN=" + tok.PIN}
}

const (
	doctorClientID = "doctor-test-client"
	doctorScope    = "test:doctor"
)

// doctorSetup makes a test CA, a token with an authentication key and a
// certificate as leaf describes, and an emulator that knows the client.
func doctorSetup(t *testing.T, leaf softhsm.LeafOptions) (*softhsm.Token, *emulator.Server) {
	t.Helper()
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{Label: "Authentication"}, leaf)
	srv := emulator.NewTest(t, emulator.Config{
		Roots:   []*x509.Certificate{ca.Root},
		Clients: []emulator.Client{{ID: doctorClientID, OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{doctorScope}}},
	})
	return tok, srv
}

// doctorLine returns the line of check in text output, or "".
func doctorLine(out, check string) string {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[1] == check {
			return l
		}
	}
	return ""
}

// wantDoctorCheck fails t unless the line of check has status and holds
// every string in contains.
func wantDoctorCheck(t *testing.T, r doctorResult, check, status string, contains ...string) {
	t.Helper()
	line := doctorLine(r.stdout, check)
	if line == "" {
		t.Fatalf("no line for check %s in:\n%s", check, r.stdout)
	}
	if got := strings.Fields(line)[0]; got != status {
		t.Errorf("check %s: status %s, want %s: %s", check, got, status, line)
	}
	for _, s := range contains {
		if !strings.Contains(line, s) {
			t.Errorf("check %s: line lacks %q: %s", check, s, line)
		}
	}
}

var doctorCheckNames = []string{"module", "token", "pin", "login", "key", "signature", "certificate", "validity",
	"key-usage", "issuer", "org-number", "environment", "metadata", "clock", "token-request"}

func TestDoctorAllGood(t *testing.T) {
	tok, srv := doctorSetup(t, softhsm.LeafOptions{})
	r := doctorExec(t, doctorTokenEnv(tok), "", "doctor", "--token-label", tok.Label,
		"--well-known", srv.MetadataURL(), "--client-id", doctorClientID, "--scope", doctorScope)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, name := range doctorCheckNames {
		wantDoctorCheck(t, r, name, "ok")
	}
	wantDoctorCheck(t, r, "org-number", "ok", softhsm.DefaultOrgNumber)
	wantDoctorCheck(t, r, "token-request", "ok", doctorScope, "not shown")
	if strings.Contains(r.stdout, "\x1b[") {
		t.Errorf("colour codes in output that is not a terminal:\n%q", r.stdout)
	}
	if st := srv.Stats(); st.Issued != 1 {
		t.Errorf("the emulator issued %d tokens, want 1", st.Issued)
	}
	for _, secret := range []string{tok.PIN, "eyJ"} {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("output holds %q (a PIN, grant or token)", secret)
		}
	}
}

func TestDoctorJSON(t *testing.T) {
	tok, srv := doctorSetup(t, softhsm.LeafOptions{})
	r := doctorExec(t, doctorTokenEnv(tok), "", "doctor", "--token-label", tok.Label,
		"--well-known", srv.MetadataURL(), "--output", "json")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var checks []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &checks); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, r.stdout)
	}
	if len(checks) != len(doctorCheckNames) {
		t.Fatalf("%d checks, want %d: %s", len(checks), len(doctorCheckNames), r.stdout)
	}
	for i, ch := range checks {
		if ch["check"] != doctorCheckNames[i] {
			t.Errorf("check %d is %v, want %s", i, ch["check"], doctorCheckNames[i])
		}
		for _, k := range []string{"check", "status", "message", "hint"} {
			if _, ok := ch[k].(string); !ok {
				t.Errorf("check %v: field %s missing or not a string", ch["check"], k)
			}
		}
		want := "ok"
		if ch["check"] == "token-request" {
			want = "skip" // no --client-id and --scope
		}
		if ch["status"] != want {
			t.Errorf("check %v: status %v, want %s: %v", ch["check"], ch["status"], want, ch["message"])
		}
	}
}

func TestDoctorWrongPIN(t *testing.T) {
	tok, srv := doctorSetup(t, softhsm.LeafOptions{})
	const wrong = "999888"
	env := append(doctorTokenEnv(tok), "MP_HSM_PIN="+wrong)
	r := doctorExec(t, env, "", "doctor", "--token-label", tok.Label, "--well-known", srv.MetadataURL())
	if r.code != exitToken {
		t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, exitToken, r.stdout, r.stderr)
	}
	wantDoctorCheck(t, r, "login", "fail", "PIN incorrect", "hint:")
	wantDoctorCheck(t, r, "key", "skip")
	if strings.Contains(r.stdout+r.stderr, wrong) {
		t.Errorf("the PIN was printed:\n%s\n%s", r.stdout, r.stderr)
	}
}

func TestDoctorNoPIN(t *testing.T) {
	tok, srv := doctorSetup(t, softhsm.LeafOptions{})
	env := []string{"SOFTHSM2_CONF=" + tok.Config, "MP_HSM_MODULE=" + tok.Module}
	r := doctorExec(t, env, "", "doctor", "--token-label", tok.Label, "--well-known", srv.MetadataURL())
	if r.code != 0 {
		t.Errorf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	wantDoctorCheck(t, r, "login", "skip", "no PIN given")
	wantDoctorCheck(t, r, "key", "skip")
	// The certificate is still judged, found without a login.
	wantDoctorCheck(t, r, "validity", "ok")
	wantDoctorCheck(t, r, "org-number", "ok", softhsm.DefaultOrgNumber)
}

func TestDoctorExpiredCertificate(t *testing.T) {
	now := time.Now()
	tok, srv := doctorSetup(t, softhsm.LeafOptions{NotBefore: now.AddDate(-1, 0, -2), NotAfter: now.AddDate(0, 0, -2)})
	r := doctorExec(t, doctorTokenEnv(tok), "", "doctor", "--token-label", tok.Label, "--well-known", srv.MetadataURL())
	if r.code != exitToken {
		t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, exitToken, r.stdout, r.stderr)
	}
	wantDoctorCheck(t, r, "validity", "fail", "expired", "2 days ago", "hint: renew")
	if !strings.Contains(r.stderr, "first validity") {
		t.Errorf("stderr does not name the first failed check:\n%s", r.stderr)
	}
}

// TestDoctorExpiredCertificateNoNetworkHint: with --client-id and
// --scope, the token request of an expired certificate is not blamed on
// the network (on 20aa3dc: "check the network and Maskinporten's status").
func TestDoctorExpiredCertificateNoNetworkHint(t *testing.T) {
	now := time.Now()
	tok, srv := doctorSetup(t, softhsm.LeafOptions{NotBefore: now.AddDate(-1, 0, -2), NotAfter: now.AddDate(0, 0, -2)})
	r := doctorExec(t, doctorTokenEnv(tok), "", "doctor", "--token-label", tok.Label, "--well-known", srv.MetadataURL(),
		"--client-id", doctorClientID, "--scope", doctorScope)
	if r.code != exitToken {
		t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, exitToken, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, "check the network") {
		t.Errorf("an expired certificate is blamed on the network:\n%s\n%s", r.stdout, r.stderr)
	}
	wantDoctorCheck(t, r, "token-request", "fail", "expired", "nothing was sent to Maskinporten")
}

func TestDoctorExpiresSoon(t *testing.T) {
	now := time.Now()
	tok, srv := doctorSetup(t, softhsm.LeafOptions{NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(0, 0, 30)})
	r := doctorExec(t, doctorTokenEnv(tok), "", "doctor", "--token-label", tok.Label, "--well-known", srv.MetadataURL())
	if r.code != 0 {
		t.Errorf("exit %d, want 0 (a warning is no failure)\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	wantDoctorCheck(t, r, "validity", "warn", "expires", "hint:")
}

func TestDoctorSigningKey(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{Label: "Signing", AlwaysAuthenticate: true},
		softhsm.LeafOptions{Usage: softhsm.Signing})
	srv := emulator.NewTest(t, emulator.Config{Roots: []*x509.Certificate{ca.Root}})
	r := doctorExec(t, doctorTokenEnv(tok), "", "doctor", "--token-label", tok.Label, "--well-known", srv.MetadataURL())
	if r.code != 0 {
		t.Errorf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	wantDoctorCheck(t, r, "key", "warn", "CKA_ALWAYS_AUTHENTICATE")
	wantDoctorCheck(t, r, "signature", "ok")
	wantDoctorCheck(t, r, "key-usage", "warn", "nonRepudiation", "signing key")
}

func TestDoctorTestCertificateInProd(t *testing.T) {
	tok, _ := doctorSetup(t, softhsm.LeafOptions{})
	r := doctorExec(t, doctorTokenEnv(tok), "", "doctor", "--token-label", tok.Label, "--env", "prod")
	if r.code != exitToken {
		t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, exitToken, r.stdout, r.stderr)
	}
	wantDoctorCheck(t, r, "issuer", "ok", "test certificate")
	wantDoctorCheck(t, r, "environment", "fail", "test certificate", "prod", "hint: a test certificate works only in test")
	wantDoctorCheck(t, r, "metadata", "skip") // nothing is sent to the real Maskinporten
}

func TestDoctorBadEnv(t *testing.T) {
	tok, _ := doctorSetup(t, softhsm.LeafOptions{})
	r := doctorExec(t, doctorTokenEnv(tok), "", "doctor", "--token-label", tok.Label, "--env", "staging")
	if r.code != exitUsage {
		t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, exitUsage, r.stdout, r.stderr)
	}
	wantDoctorCheck(t, r, "environment", "fail", `--env "staging"`)
}

func TestDoctorEmulatorDown(t *testing.T) {
	tok, srv := doctorSetup(t, softhsm.LeafOptions{})
	url := srv.MetadataURL()
	srv.Close()
	r := doctorExec(t, doctorTokenEnv(tok), "", "doctor", "--token-label", tok.Label, "--well-known", url,
		"--client-id", doctorClientID, "--scope", doctorScope)
	if r.code != exitUnavailable {
		t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, exitUnavailable, r.stdout, r.stderr)
	}
	wantDoctorCheck(t, r, "environment", "skip")
	wantDoctorCheck(t, r, "metadata", "fail", url, "hint:")
	wantDoctorCheck(t, r, "clock", "skip")
	wantDoctorCheck(t, r, "token-request", "skip")
}

func TestDoctorClockSkew(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offset time.Duration
		status string
		code   int
		words  string
	}{
		{"server 60 s ahead", 60 * time.Second, "fail", exitRefused, "60 s behind"},
		{"server 60 s behind", -60 * time.Second, "fail", exitRefused, "60 s ahead of"},
		{"server 3.5 s ahead", 3500 * time.Millisecond, "warn", 0, "behind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, srv := doctorSetup(t, softhsm.LeafOptions{})
			srv.SetDateOffset(tc.offset)
			r := doctorExec(t, doctorTokenEnv(tok), "", "doctor", "--token-label", tok.Label, "--well-known", srv.MetadataURL())
			if r.code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tc.code, r.stdout, r.stderr)
			}
			wantDoctorCheck(t, r, "clock", tc.status, tc.words, "hint: synchronise the clock")
		})
	}
}

func TestDoctorTokenRefused(t *testing.T) {
	tok, srv := doctorSetup(t, softhsm.LeafOptions{})
	r := doctorExec(t, doctorTokenEnv(tok), "", "doctor", "--token-label", tok.Label, "--well-known", srv.MetadataURL(),
		"--client-id", doctorClientID, "--scope", "test:not-registered")
	if r.code != exitRefused {
		t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, exitRefused, r.stdout, r.stderr)
	}
	wantDoctorCheck(t, r, "token-request", "fail", "HTTP 400", "invalid_scope", "hint: the scope is not registered")
}

func TestDoctorBadOutput(t *testing.T) {
	r := doctorExec(t, nil, "", "doctor", "--output", "xml")
	if r.code != exitUsage || !strings.Contains(r.stderr, `--output "xml"`) {
		t.Errorf("exit %d, stderr %q; want exit %d naming --output", r.code, r.stderr, exitUsage)
	}
}
