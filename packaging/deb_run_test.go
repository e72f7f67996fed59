package packaging

// What is in the packages, run: the unpacked binaries (amd64 here, arm64
// under qemu-user), their man pages against --help, the completions, the
// systemd units and the example configuration.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// arm64Root is where qemu-user finds the arm64 C library.
const arm64Root = "/usr/aarch64-linux-gnu"

// binEnv is the environment the packaged binary runs in: nothing of the
// caller's MP_HSM_* settings.
func binEnv(extra ...string) []string {
	return append([]string{"PATH=/usr/bin:/bin", "HOME=" + work, "LC_ALL=C.UTF-8"}, extra...)
}

// mpHSM returns the command line that runs the packaged binary of arch.
func mpHSM(t *testing.T, arch string, args ...string) (string, []string) {
	t.Helper()
	bin := filepath.Join(unpack(t, arch), "usr/bin/mp-hsm")
	if arch == "arm64" && runtime.GOARCH != "arm64" {
		return "qemu-aarch64-static", append([]string{"-L", arm64Root, bin}, args...)
	}
	return bin, args
}

func TestVersionOfBothBinaries(t *testing.T) {
	needTools(t)
	describe := strings.TrimSpace(command(t, 30*time.Second, repo, nil, "git", "describe", "--tags", "--always", "--dirty"))
	for _, arch := range arches {
		name, args := mpHSM(t, arch, "--version")
		out := command(t, time.Minute, "", binEnv(), name, args...)
		if want := "mp-hsm version " + describe + " ("; !strings.HasPrefix(out, want) {
			t.Errorf("%s: --version printed %q, want it to start with %q", arch, out, want)
		}
	}
}

// flagNameRe finds flag names in an option's term: --name, -n.
var flagNameRe = regexp.MustCompile(`(?:^|[\s,\[])(--?[A-Za-z0-9][-A-Za-z0-9]*)`)

// optionFlags returns the flags of the options section of --help
// ("OPTIONS:", indent 3 spaces) or of a man page ("OPTIONS", 7 spaces): the
// lines indented by indent that start with a dash, up to the next section.
func optionFlags(text, header, indent string) []string {
	set := map[string]bool{}
	in := false
	for _, line := range strings.Split(text, "\n") {
		if line == header || line == "GLOBAL "+header {
			in = true
			continue
		}
		if line != "" && !strings.HasPrefix(line, " ") {
			in = false
		}
		rest, ok := strings.CutPrefix(line, indent)
		if !in {
			continue
		}
		if !ok || !strings.HasPrefix(rest, "-") {
			continue
		}
		term, _, _ := strings.Cut(rest, "  ") // the usage follows two spaces
		for _, m := range flagNameRe.FindAllStringSubmatch(term, -1) {
			set[m[1]] = true
		}
	}
	out := make([]string, 0, len(set))
	for f := range set {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// commandsRe is a command line of the COMMANDS section of mp-hsm --help.
var commandsRe = regexp.MustCompile(`^   ([a-z][-a-z0-9]*)(?:, [a-z]+)*\s{2,}\S`)

func TestManPagesShowTheFlagsOfHelp(t *testing.T) {
	root := unpack(t, "amd64")
	bin := filepath.Join(root, "usr/bin/mp-hsm")
	mandir := filepath.Join(root, "usr/share/man/man1")
	manEnv := append(os.Environ(), "MANWIDTH=250", "MANPAGER=cat", "PAGER=cat", "LC_ALL=C.UTF-8")

	top := command(t, time.Minute, "", binEnv(), bin, "--help")
	_, cmdsPart, _ := strings.Cut(top, "\nCOMMANDS:\n")
	cmdsPart, _, _ = strings.Cut(cmdsPart, "\n\n")
	var cmds []string
	for _, line := range strings.Split(cmdsPart, "\n") {
		if m := commandsRe.FindStringSubmatch(line); m != nil {
			cmds = append(cmds, m[1])
		}
	}
	if len(cmds) < 8 {
		t.Fatalf("found only %v in the COMMANDS of mp-hsm --help:\n%s", cmds, top)
	}

	want := []string{"mp-hsm.1.gz"}
	for _, c := range cmds {
		want = append(want, "mp-hsm-"+c+".1.gz")
	}
	sort.Strings(want)
	entries, err := os.ReadDir(mandir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("man pages %v, want one per command of --help: %v", got, want)
	}

	check := func(page string, helpArgs ...string) {
		help := command(t, time.Minute, "", binEnv(), bin, append(helpArgs, "--help")...)
		man := command(t, time.Minute, "", manEnv, "man", "-l", filepath.Join(mandir, page))
		h, m := optionFlags(help, "OPTIONS:", "   "), optionFlags(man, "OPTIONS", "       ")
		if len(h) == 0 || strings.Join(h, " ") != strings.Join(m, " ") {
			t.Errorf("%s shows the flags\n  %v\nmp-hsm %s --help shows\n  %v", page, m, strings.Join(helpArgs, " "), h)
		}
		if strings.Contains(man, "\u2010") {
			t.Errorf("%s: man hyphenated a word (U+2010), which could not be copied", page)
		}
	}
	check("mp-hsm.1.gz")
	for _, c := range cmds {
		check("mp-hsm-"+c+".1.gz", c)
	}

	// The page of mp-hsm token names the everyday flags, with their variables.
	token := command(t, time.Minute, "", manEnv, "man", "-l", filepath.Join(mandir, "mp-hsm-token.1.gz"))
	for _, w := range []string{"--module PATH", "[$MP_HSM_MODULE]", "--scope SCOPE", "--client-id ID", "Choosing the key"} {
		if !strings.Contains(token, w) {
			t.Errorf("mp-hsm-token.1 lacks %q", w)
		}
	}
}

func TestCompletionsAreWhatTheCommandPrints(t *testing.T) {
	root := unpack(t, "amd64")
	bin := filepath.Join(root, "usr/bin/mp-hsm")
	for shell, path := range map[string]string{
		"bash": "usr/share/bash-completion/completions/mp-hsm",
		"zsh":  "usr/share/zsh/vendor-completions/_mp-hsm",
		"fish": "usr/share/fish/vendor_completions.d/mp-hsm.fish",
	} {
		data, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		want := command(t, time.Minute, "", binEnv(), bin, "completion", shell)
		if len(data) == 0 || string(data) != want {
			t.Errorf("%s: %d bytes, not what mp-hsm completion %s prints (%d bytes)", path, len(data), shell, len(want))
		}
	}
}

func TestSystemdUnitsVerify(t *testing.T) {
	root := unpack(t, "amd64")
	units := filepath.Join(root, "usr/lib/systemd/system")
	service, err := os.ReadFile(filepath.Join(units, "mp-hsm.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nExecStart=/usr/bin/mp-hsm serve ", "\nEnvironmentFile=/etc/mp-hsm/mp-hsm.env\n",
		"\nUser=mp-hsm\n", "\nSupplementaryGroups=mp-hsm-clients\n", "--socket-group mp-hsm-clients",
		"\nReadWritePaths=/run/mp-hsm\n", "\nLoadCredential=pin:/etc/mp-hsm/pin\n",
	} {
		if !strings.Contains(string(service), want) {
			t.Errorf("mp-hsm.service lacks %q", want)
		}
	}
	// systemd-analyze verify checks that ExecStart's binary exists: the
	// copy it verifies runs the unpacked one. It finds the man page of
	// Documentation= through MANPATH.
	dir := t.TempDir()
	rewritten := strings.ReplaceAll(string(service), "/usr/bin/mp-hsm ", filepath.Join(root, "usr/bin/mp-hsm")+" ")
	if err := os.WriteFile(filepath.Join(dir, "mp-hsm.service"), []byte(rewritten), 0o644); err != nil {
		t.Fatal(err)
	}
	socket, err := os.ReadFile(filepath.Join(units, "mp-hsm.socket"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mp-hsm.socket"), socket, 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "MANPATH="+filepath.Join(root, "usr/share/man"), "SYSTEMD_LOG_COLOR=0")
	stdout, stderr, err := runCommand(time.Minute, dir, env, "systemd-analyze", "verify", "mp-hsm.service", "mp-hsm.socket")
	// verify exits 0 after some complaints (an unparsable value is
	// "ignored"): any output is a failure.
	if err != nil || stdout != "" || stderr != "" {
		t.Errorf("systemd-analyze verify: %v\n%s%s", err, stdout, stderr)
	}

	// What postinst runs, systemd-sysusers and systemd-tmpfiles, into an
	// empty root: the user and groups, then /run/mp-hsm owned by the user.
	sys := t.TempDir()
	if err := os.Mkdir(filepath.Join(sys, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	command(t, time.Minute, "", nil, "systemd-sysusers", "--root="+sys, filepath.Join(root, "usr/lib/sysusers.d/mp-hsm.conf"))
	passwd, _ := os.ReadFile(filepath.Join(sys, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(sys, "etc/group"))
	user := regexp.MustCompile(`(?m)^mp-hsm:x:(\d+):(\d+):[^:]*:/nonexistent:/usr/sbin/nologin$`).FindStringSubmatch(string(passwd))
	if user == nil || !regexp.MustCompile(`(?m)^mp-hsm-clients:x:\d+:$`).Match(group) ||
		!regexp.MustCompile(`(?m)^mp-hsm:x:`+user[2]+`:$`).Match(group) {
		t.Fatalf("systemd-sysusers made\n%s\n%s", passwd, group)
	}
	command(t, time.Minute, "", nil, "systemd-tmpfiles", "--create", "--root="+sys, filepath.Join(root, "usr/lib/tmpfiles.d/mp-hsm.conf"))
	fi, err := os.Stat(filepath.Join(sys, "run/mp-hsm"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fmt.Sprint(st.Uid) != user[1] || fi.Mode().Perm() != 0o755 || !fi.IsDir() {
		t.Errorf("systemd-tmpfiles made /run/mp-hsm %v owned by %d, want a 0755 directory of mp-hsm (%s)", fi.Mode(), st.Uid, user[1])
	}
}

// The example configuration sets nothing, holds no PIN, and names only
// variables that mp-hsm serve reads.
func TestExampleConfigurationNamesWhatServeReads(t *testing.T) {
	root := unpack(t, "amd64")
	bin := filepath.Join(root, "usr/bin/mp-hsm")
	data, err := os.ReadFile(filepath.Join(root, "etc/mp-hsm/mp-hsm.env"))
	if err != nil {
		t.Fatal(err)
	}
	reads := map[string]bool{}
	for _, help := range []string{command(t, time.Minute, "", binEnv(), bin, "--help"), command(t, time.Minute, "", binEnv(), bin, "serve", "--help")} {
		for _, m := range regexp.MustCompile(`\$(MP_HSM_[A-Z0-9_]+)`).FindAllStringSubmatch(help, -1) {
			reads[m[1]] = true
		}
	}
	named := 0
	for i, line := range strings.Split(string(data), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			t.Errorf("mp-hsm.env:%d sets something: %q", i+1, line)
		}
		for _, m := range regexp.MustCompile(`#(MP_HSM_[A-Z0-9_]+)=`).FindAllStringSubmatch(line, -1) {
			named++
			if !reads[m[1]] {
				t.Errorf("mp-hsm.env:%d names %s, which mp-hsm serve does not read", i+1, m[1])
			}
		}
		if strings.Contains(line, "MP_HSM_PIN=") || strings.Contains(line, "MP_HSM_PIN_FILE=") {
			t.Errorf("mp-hsm.env:%d is about a PIN variable: the unit passes the PIN as a credential", i+1)
		}
	}
	if named < 10 {
		t.Errorf("mp-hsm.env names only %d variables", named)
	}
}

// started is a long-running packaged command: the emulator.
type started struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	stderr *strings.Builder
}

// startEmulator runs `mp-hsm emulate` and returns it with the metadata
// URL it printed.
func startEmulator(t *testing.T, name string, args []string) (*started, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = binEnv()
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	s := &started{cmd: cmd, cancel: cancel, stderr: &strings.Builder{}}
	cmd.Stderr = s.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- strings.TrimSpace(line)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case url := <-lines:
		if !strings.HasPrefix(url, "http://127.0.0.1:") {
			t.Fatalf("%s %v printed %q, not a metadata URL; stderr:\n%s", name, args, url, s.stderr)
		}
		return s, url
	case <-time.After(time.Minute):
		t.Fatalf("%s %v printed no URL within a minute; stderr so far:\n%s", name, args, s.stderr)
	}
	return nil, ""
}

// stop sends SIGTERM and wants a clean exit within the deadline.
func (s *started) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s ended with %v after SIGTERM; stderr:\n%s", s.cmd, err, s.stderr)
		}
	case <-time.After(30 * time.Second):
		s.cancel()
		t.Errorf("%s did not stop within 30s of SIGTERM; stderr:\n%s", s.cmd, s.stderr)
	}
}

func getMetadata(t *testing.T, url string) map[string]any {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var md map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&md); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	issuer, _ := md["issuer"].(string)
	endpoint, _ := md["token_endpoint"].(string)
	if !strings.HasPrefix(issuer, "http://127.0.0.1:") || !strings.HasPrefix(endpoint, strings.TrimSuffix(issuer, "/")) {
		t.Fatalf("GET %s: issuer %q, token_endpoint %q", url, issuer, endpoint)
	}
	return md
}

// The packaged amd64 binary gets a token: a SoftHSM2 token made by
// softhsm/cmd/provision, the packaged emulator as Maskinporten.
func TestTokenFromSoftHSM2AndTheEmulator(t *testing.T) {
	root := unpack(t, "amd64")
	bin := filepath.Join(root, "usr/bin/mp-hsm")
	store := filepath.Join(t.TempDir(), "softhsm")
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH: %v", err)
	}
	command(t, 3*time.Minute, repo, nil, goTool, "run", "./softhsm/cmd/provision", "-dir", store)
	settings := readEnvFile(t, filepath.Join(store, "client.env"))

	emu, url := startEmulator(t, bin, []string{"emulate", "--root", settings["MP_HSM_ROOT_CA"],
		"--client-id", "deb-test-client", "--org-number", settings["MP_HSM_ORG_NUMBER"], "--scope", "deb:test"})
	getMetadata(t, url)
	out := command(t, 2*time.Minute, "", binEnv("SOFTHSM2_CONF="+settings["SOFTHSM2_CONF"]), bin, "token",
		"--module", settings["MP_HSM_MODULE"], "--token-label", settings["MP_HSM_TOKEN_LABEL"], "--key-id", settings["MP_HSM_KEY_ID"],
		"--pin-file", settings["MP_HSM_PIN_FILE"], "--client-id", "deb-test-client", "--well-known", url, "--scope", "deb:test")
	parts := strings.Split(strings.TrimSuffix(out, "\n"), ".")
	if len(parts) != 3 || strings.Count(out, "\n") != 1 {
		t.Fatalf("mp-hsm token printed %q, not one JWT and a newline", out)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Scope    string `json:"scope"`
		ClientID string `json:"client_id"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Scope != "deb:test" || claims.ClientID != "deb-test-client" {
		t.Errorf("token claims %s (%v), want scope deb:test for deb-test-client", payload, err)
	}
	emu.stop(t)
}

// The arm64 binary, under qemu-user: its emulator starts, serves its
// metadata and stops on SIGTERM.
func TestArm64EmulatorUnderQemu(t *testing.T) {
	if !hasArch("arm64") {
		t.Skipf("MP_HSM_DEB_ARCHES=%q: make test checks the amd64 package; make deb checks both", strings.Join(arches, " "))
	}
	needTools(t)
	// Any certificate will do as the trust anchor: the test asks no token.
	root := filepath.Join(t.TempDir(), "root.pem")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "deb test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	name, args := mpHSM(t, "arm64", "emulate", "--root", root, "--client-id", "deb-test-client", "--org-number", "910000004", "--scope", "deb:test")
	emu, url := startEmulator(t, name, args)
	getMetadata(t, url)
	emu.stop(t)
}

// readEnvFile reads the KEY=value lines provision writes (values maybe in
// single quotes).
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		out[k] = strings.Trim(v, "'")
	}
	for _, k := range []string{"SOFTHSM2_CONF", "MP_HSM_MODULE", "MP_HSM_TOKEN_LABEL", "MP_HSM_KEY_ID", "MP_HSM_PIN_FILE", "MP_HSM_ROOT_CA", "MP_HSM_ORG_NUMBER"} {
		if out[k] == "" {
			t.Fatalf("%s has no %s:\n%s", path, k, data)
		}
	}
	return out
}
