//go:build cgo

package main

// The docs run as written: TestDocsOrganisation reads docs/daemon.md's
// organisation example (its two TOML files, the systemd ExecStart line and
// the callers' commands) and docs/lifecycle.md's commands out of the
// markdown and runs them against one `mp-hsm emulate`. What a test machine
// must change (paths, ports, users) is replaced line by line, and a line
// that is no longer in the doc fails the test: the doc cannot drift.

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// readDoc returns the text of docs/name.
func readDoc(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// docBlock returns the content of the first fenced block of language lang
// (```lang) after the text marker in doc.
func docBlock(t *testing.T, doc, marker, lang string) string {
	t.Helper()
	i := strings.Index(doc, marker)
	if i < 0 {
		t.Fatalf("the doc no longer has %q", marker)
	}
	rest := doc[i:]
	open := "```" + lang + "\n"
	j := strings.Index(rest, open)
	if j < 0 {
		t.Fatalf("no ```%s block after %q", lang, marker)
	}
	rest = rest[j+len(open):]
	end := strings.Index(rest, "```")
	if end < 0 {
		t.Fatalf("the ```%s block after %q does not end", lang, marker)
	}
	return rest[:end]
}

// replaceEach replaces each old (even index of pairs) by the new after it;
// each old must occur in s, else the doc has drifted from the test.
func replaceEach(t *testing.T, what, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("%s no longer holds %q: update the doc test with the doc", what, pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

// shellCommands splits a shell block into its commands (a trailing
// backslash continues a line), each with the comment above it.
func shellCommands(block string) (cmds, comments []string) {
	var cur, comment string
	for l := range strings.Lines(block) {
		l = strings.TrimSpace(l)
		switch {
		case l == "":
		case strings.HasPrefix(l, "#"):
			comment = l
		case strings.HasSuffix(l, `\`):
			cur += strings.TrimSuffix(l, `\`)
		default:
			cmds, comments = append(cmds, cur+l), append(comments, comment)
			cur = ""
		}
	}
	return cmds, comments
}

// The uids and gids that stand for the example's users and groups.
const (
	docLedger, docPayroll, docOpsUser = 65501, 65502, 65503
	docHR, docMPOps                   = 65511, 65512
)

// TestDocsOrganisation runs docs/daemon.md's organisation example and then
// docs/lifecycle.md, as written, against one `mp-hsm emulate` started as
// daemon.md says.
func TestDocsOrganisation(t *testing.T) {
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
			t.Fatal("this test runs the callers as other uids with setpriv, which needs root")
		}
		t.Skip("needs root, to run callers as other uids")
	}
	t.Parallel()
	daemonMD := readDoc(t, "daemon.md")
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	// The HSM partition of the example: the enterprise certificate's key
	// and the ops key.
	tok := softhsm.New(t, softhsm.Options{Label: "prod-partition"})
	pub := tok.GenerateRSA(t, 2048, softhsm.KeyOptions{Label: "enterprise", ID: []byte{1}})
	cert, err := ca.IssueLeaf(pub, softhsm.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok.WriteCertificate(t, cert, []byte{1}, "enterprise")
	tok.WriteCertificate(t, ca.Intermediate, ca.Intermediate.SubjectKeyId, ca.Intermediate.Subject.CommonName)
	tok.GenerateRSA(t, 2048, softhsm.KeyOptions{Label: "ops-signing", ID: []byte{2}})

	dir, err := os.MkdirTemp("", "mphsm") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the callers' uids must reach the socket
		t.Fatal(err)
	}
	write := func(name, content string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("root.pem", string(ca.RootPEM()), 0o644)
	write("emulate.toml", docBlock(t, daemonMD, "### Trying the example locally", "toml"), 0o644)
	bin := binary(t)
	env := testexec.Env(dir, "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"),
		"SOFTHSM2_CONF="+tok.Config, "MP_HSM_MODULE="+tok.Module, "MP_HSM_PIN="+tok.PIN)
	sh := func(env []string, line string) testexec.Result {
		t.Helper()
		c := testexec.Command(t, time.Minute, "sh", "-c", line)
		c.Env, c.Dir = env, dir
		return testexec.Run(t, c)
	}

	// The emulator, as daemon.md starts it.
	cmds, _ := shellCommands(docBlock(t, daemonMD, "Start it with the root certificate", "sh"))
	if len(cmds) != 2 || !strings.HasPrefix(cmds[1], "mp-hsm emulate ") {
		t.Fatalf("daemon.md's emulator commands changed: %q", cmds)
	}
	if res := sh(env, cmds[0]); res.Code != 0 {
		t.Fatalf("%s: %s", cmds[0], res)
	}
	args := strings.Fields(cmds[1])
	ec := testexec.Command(t, 5*time.Minute, bin, args[1:]...)
	ec.Env, ec.Dir = env, dir
	emu := startEmulateCmd(t, ec)

	// The daemon, with daemon.md's mp-hsm.toml and systemd ExecStart.
	sock := filepath.Join(dir, "mp-hsm.sock")
	audit := filepath.Join(dir, "audit.jsonl")
	write("payroll.secret", "payroll-s3cret+%/=\n", 0o600)
	pinFile := write("pin", tok.PIN+"\n", 0o600)
	conf := write("mp-hsm.toml", replaceEach(t, "daemon.md's mp-hsm.toml", docBlock(t, daemonMD, "`/etc/mp-hsm/mp-hsm.toml`, owned by root", "toml"),
		`env         = "prod"`, fmt.Sprintf(`well-known  = %q`, emu.wellKnown),
		`"unix:/run/mp-hsm/mp-hsm.sock", "tcp:127.0.0.1:8400"`, fmt.Sprintf(`"unix:%s", "tcp:127.0.0.1:0"`, sock),
		`"/var/log/mp-hsm/audit.jsonl"`, fmt.Sprintf("%q", audit),
		`users     = ["ledger"]`, fmt.Sprintf(`users     = ["%d"]`, docLedger),
		`users       = ["payroll"]`, fmt.Sprintf(`users       = ["%d"]`, docPayroll),
		`groups      = ["hr"]`, fmt.Sprintf(`groups      = ["%d"]`, docHR),
		`groups    = ["mp-ops"]`, fmt.Sprintf(`groups    = ["%d"]`, docMPOps),
		`"/etc/mp-hsm/payroll.secret"`, fmt.Sprintf("%q", filepath.Join(dir, "payroll.secret")),
	), 0o644)
	var execStart string
	for l := range strings.Lines(docBlock(t, daemonMD, "with `systemctl edit mp-hsm`", "ini")) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "ExecStart="); ok && v != "" {
			execStart = v
		}
	}
	args = strings.Fields(replaceEach(t, "daemon.md's ExecStart", execStart,
		"/usr/bin/mp-hsm", bin, "%d/pin", pinFile, "/etc/mp-hsm/mp-hsm.toml", conf))
	sc := testexec.Command(t, 5*time.Minute, args[0], args[1:]...)
	sc.Env, sc.Dir = testexec.Setenv(env, "MP_HSM_PIN"), dir
	var errOut lockedLog
	sc.Stderr = &errOut
	serve := testexec.Start(t, sc)
	tcpRE := regexp.MustCompile(`address=tcp:(127\.0\.0\.1:\d+)`)
	var tcpAddr string
	for deadline := time.Now().Add(30 * time.Second); tcpAddr == ""; time.Sleep(20 * time.Millisecond) {
		if m := tcpRE.FindStringSubmatch(errOut.String()); m != nil {
			if _, err := os.Stat(sock); err == nil {
				tcpAddr = m[1]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not start:\n%s", errOut.String())
		}
	}

	// The callers' commands, each as the user its comment names.
	asUser := map[string][]string{
		"# as the user ledger":           {"setpriv", "--reuid", fmt.Sprint(docLedger), "--regid", fmt.Sprint(docLedger), "--clear-groups"},
		"# as the user payroll":          {"setpriv", "--reuid", fmt.Sprint(docPayroll), "--regid", fmt.Sprint(docPayroll), "--groups", fmt.Sprint(docHR)},
		"# a user in both hr and mp-ops": {"setpriv", "--reuid", fmt.Sprint(docOpsUser), "--regid", fmt.Sprint(docOpsUser), "--groups", fmt.Sprintf("%d,%d", docHR, docMPOps)},
		"# the reporting job":            nil, // as root, which may read the secret file
	}
	wantClient := map[string]string{
		"# as the user ledger":           "0b7f3c1e-ledger-client-id",
		"# as the user payroll":          "5d2a9e40-payroll-client-id",
		"# a user in both hr and mp-ops": "91c0d7aa-ops-client-id",
		"# the reporting job":            "5d2a9e40-payroll-client-id",
	}
	run := func(who []string, line string) serveAnswer {
		t.Helper()
		line = replaceEach(t, "a caller's command", line, "curl ", `curl -sS -w '\n%{http_code}' `)
		c := testexec.Command(t, 30*time.Second, "sh", "-c", line)
		if who != nil {
			c = testexec.Command(t, 30*time.Second, who[0], append(who[1:], "sh", "-c", line)...)
		}
		c.Env, c.Dir = env, dir
		res := testexec.Run(t, c)
		body, code, _ := strings.Cut(strings.TrimSpace(res.Stdout), "\n")
		a := serveAnswer{}
		if _, err := fmt.Sscan(code, &a.status); err != nil || json.Unmarshal([]byte(body), &a) != nil {
			t.Fatalf("%s: %s", line, res)
		}
		return a
	}
	cmds, comments := shellCommands(replaceEach(t, "daemon.md's callers' commands", docBlock(t, daemonMD, "The programs ask without credentials on the socket", "sh"),
		"/run/mp-hsm/mp-hsm.sock", sock, "127.0.0.1:8400", tcpAddr))
	if len(cmds) != 5 {
		t.Fatalf("daemon.md's callers' block has %d commands; the test knows 5: %q", len(cmds), cmds)
	}
	for i, line := range cmds {
		key := ""
		for k := range asUser {
			if strings.HasPrefix(comments[i], k) {
				key = k
			}
		}
		if key == "" {
			t.Fatalf("daemon.md's caller %q: the test does not know who %q is", line, comments[i])
		}
		t.Logf("daemon.md (%s): %s", key, line)
		a := run(asUser[key], line)
		if a.status != 200 || a.AccessToken == "" {
			t.Fatalf("%s (%s): %d %q, want a token\n%s", line, key, a.status, a.Error, errOut.String())
		}
		if got := tokenClaim(t, a.AccessToken, "client_id"); got != wantClient[key] {
			t.Errorf("%s: a token of %q, want %q", line, got, wantClient[key])
		}
	}
	// "The user ledger asking for client_id=payroll gets 401 invalid_client".
	if a := run(asUser["# as the user ledger"], cmds[0]+" -d client_id=payroll"); a.status != 401 || a.Error != "invalid_client" {
		t.Errorf("ledger naming payroll: %d %q, want 401 invalid_client", a.status, a.Error)
	}
	if err := serve.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := serve.Err(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, errOut.String())
	}

	// docs/lifecycle.md against the same emulator, on the same token: the
	// enterprise key is the self-service client's, the ops client's key is
	// rotated.
	lenv := testexec.Setenv(env, "MP_HSM_TOKEN_LABEL=prod-partition", "MP_HSM_KEY_LABEL=enterprise",
		"MP_HSM_WELL_KNOWN="+emu.wellKnown, "MP_HSM_ADMIN_API="+emu.adminAPI,
		"CLIENT=91c0d7aa-ops-client-id", "SELF_SERVICE_CLIENT=self-service", "SCOPE=altinn:serviceowner", "OLD_KID=ops-2026")
	var newKid string
	for _, line := range lifecycleCommands(t, readDoc(t, "lifecycle.md")) {
		if strings.HasPrefix(line, "mp-hsm key import-cert ") {
			issueFromCSR(t, ca, filepath.Join(dir, "req.csr"), filepath.Join(dir, "issued.pem"))
		}
		if strings.HasPrefix(line, "mp-hsm admin keys rotate ") {
			// The key of step 1, registered in step 4, is now the old one.
			lenv = testexec.Setenv(lenv, "OLD_KID="+newKid)
		}
		if strings.HasPrefix(line, "export ") {
			k, v, _ := strings.Cut(strings.TrimPrefix(line, "export "), "=")
			lenv = testexec.Setenv(lenv, k+"="+os.Expand(v, func(n string) string { return envValue(lenv, n) }))
			continue
		}
		t.Logf("lifecycle.md: %s", line)
		res := sh(lenv, line)
		if res.Code != 0 {
			t.Fatalf("lifecycle.md: %s\n%s", line, res)
		}
		if strings.HasPrefix(line, "mp-hsm key generate ") {
			var g struct{ Kid string }
			if err := json.Unmarshal([]byte(res.Stdout), &g); err != nil || g.Kid == "" {
				t.Fatalf("%s printed %q", line, res.Stdout)
			}
			newKid = g.Kid
		}
	}
	res := sh(lenv, "mp-hsm admin keys list --client-id $CLIENT --output json")
	if res.Code != 0 || strings.Contains(res.Stdout, "ops-2026") || strings.Contains(res.Stdout, newKid) || !strings.Contains(res.Stdout, `"kid"`) {
		t.Errorf("after lifecycle.md the client's keys are %s; want the rotated key alone", res)
	}
}

// lifecycleCommands are the commands of lifecycle.md's indented blocks,
// each optional part ([--flag a|b]) given with its first choice.
func lifecycleCommands(t *testing.T, doc string) []string {
	t.Helper()
	opt := regexp.MustCompile(`\[([^\]]*)\]`)
	var out []string
	for l := range strings.Lines(doc) {
		l = strings.TrimRight(l, "\n")
		cmd, ok := strings.CutPrefix(l, "    ")
		if !ok || !(strings.HasPrefix(cmd, "mp-hsm ") || strings.HasPrefix(cmd, "export ")) {
			continue
		}
		cmd = opt.ReplaceAllStringFunc(cmd, func(m string) string {
			first, _, _ := strings.Cut(m[1:len(m)-1], "|")
			return first
		})
		out = append(out, strings.Join(strings.Fields(cmd), " "))
	}
	if len(out) < 8 {
		t.Fatalf("lifecycle.md has %d commands; the test expected its 5 steps: %q", len(out), out)
	}
	return out
}

// envValue is the value of name in env.
func envValue(env []string, name string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// issueFromCSR plays the CA of lifecycle.md's step 2: it issues a
// certificate for the key of the request in csrFile and writes it, with
// the intermediate, to out.
func issueFromCSR(t *testing.T, ca *softhsm.CA, csrFile, out string) {
	t.Helper()
	data, err := os.ReadFile(csrFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM", csrFile)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("the request's signature: %v", err)
	}
	cert, err := ca.IssueLeaf(csr.PublicKey, softhsm.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pemOut := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	pemOut = append(pemOut, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Intermediate.Raw})...)
	if err := os.WriteFile(out, pemOut, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTryItLocally runs docs/try-it-locally.md's commands as written, in
// one bash, in an empty directory: a SoftHSM2 token of its own, a key, a
// CSR signed by an openssl CA, import-cert, a token, a daemon and a
// rotation against mp-hsm emulate.
func TestTryItLocally(t *testing.T) {
	for _, tool := range []string{"softhsm2-util", "openssl", "curl", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (scripts/deps.sh installs it)", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
	module, err := softhsm.ModulePath()
	if err != nil {
		t.Skip(err)
	}
	t.Parallel()
	script := docBlock(t, readDoc(t, "try-it-locally.md"), "# Try it locally", "sh")
	// The page names Debian's path of SoftHSM2's module; the test uses
	// the one this machine has, which is the same on Debian.
	script = replaceEach(t, "try-it-locally.md", script, "/usr/lib/softhsm/libsofthsm2.so", module)
	dir, err := os.MkdirTemp("", "mphsm") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := binary(t)
	c := testexec.Command(t, 3*time.Minute, "bash", "-euo", "pipefail", "-c", script)
	c.Env, c.Dir = testexec.Env(dir, "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH")), dir
	res := testexec.Run(t, c)
	if res.Code != 0 {
		logs := ""
		for _, f := range []string{"emulator.log", "serve.log"} {
			data, _ := os.ReadFile(filepath.Join(dir, f))
			logs += f + ":\n" + string(data)
		}
		t.Fatalf("try-it-locally.md: %s\n%s", res, logs)
	}
	// Two access tokens (mp-hsm token, the daemon's answer) and the rotation.
	if n := len(regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`).FindAllString(res.Stdout, -1)); n != 2 {
		t.Errorf("want 2 access tokens in the output, got %d:\n%s", n, res.Stdout)
	}
	if !strings.Contains(res.Stdout, `"token_type":"Bearer"`) {
		t.Errorf("the daemon's answer is not in the output:\n%s", res.Stdout)
	}
	if !strings.Contains(res.Stdout, "rotated") {
		t.Errorf("the rotation is not in the output:\n%s", res.Stdout)
	}
}
