package packaging

// The Debian packages, as make deb builds them: their control fields, their
// file lists and the bytes of a second build. deb_run_test.go runs what is
// in them. Under make test, MP_HSM_DEB_DIR names the dist/ directory make
// deb just filled; without it the packages are built here, in a temporary
// directory.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// arches are the architectures whose packages the tests check:
// MP_HSM_DEB_ARCHES (make test sets "amd64"), by default amd64 and arm64,
// as make deb builds them.
var arches = debArches(os.Getenv("MP_HSM_DEB_ARCHES"))

func debArches(env string) []string {
	if a := strings.Fields(env); len(a) > 0 {
		return a
	}
	return []string{"amd64", "arm64"}
}

// hasArch reports whether the tests check the package of arch.
func hasArch(arch string) bool {
	for _, a := range arches {
		if a == arch {
			return true
		}
	}
	return false
}

// tools the tests need, with the Debian package of each; arm64Tools too
// when they check the arm64 package.
var tools = [][2]string{
	{"git", "git"}, {"dpkg-deb", "dpkg"}, {"dpkg-buildflags", "dpkg-dev"}, {"dpkg-shlibdeps", "dpkg-dev"},
	{"systemd-analyze", "systemd"}, {"man", "man-db"},
	{"/usr/lib/softhsm/libsofthsm2.so", "softhsm2"},
}

var arm64Tools = [][2]string{
	{"aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"}, {"/usr/aarch64-linux-gnu/include/stdlib.h", "libc6-dev-arm64-cross"},
	{"qemu-aarch64-static", "qemu-user-static"},
}

var (
	work     string // removed by TestMain
	repo     string
	builtMu  sync.Mutex
	built    = map[string]string{} // directory name -> where its packages are
	unpackMu sync.Mutex
	unpacked = map[string]string{} // arch -> unpacked tree
)

func TestMain(m *testing.M) {
	var err error
	if work, err = os.MkdirTemp("", "mp-hsm-deb-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	repo, _ = filepath.Abs("..")
	code := m.Run()
	os.RemoveAll(work)
	os.Exit(code)
}

// needTools fails the test, saying what to install, when a tool is missing.
func needTools(t *testing.T) {
	t.Helper()
	var missing []string
	need := tools
	if hasArch("arm64") {
		need = append(need[:len(need):len(need)], arm64Tools...)
	}
	for _, tool := range need {
		var err error
		if strings.HasPrefix(tool[0], "/") {
			_, err = os.Stat(tool[0])
		} else {
			_, err = exec.LookPath(tool[0])
		}
		if err != nil {
			missing = append(missing, tool[1])
		}
	}
	if len(missing) > 0 {
		t.Fatalf("missing what the package test needs: run scripts/deps.sh deb as root, or apt-get install --no-install-recommends %s", strings.Join(missing, " "))
	}
}

// command runs name with args in dir with a deadline and returns its
// stdout; on failure or expiry it fails the test with the command and its
// output so far.
func command(t *testing.T, timeout time.Duration, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, errOut, err := runCommand(timeout, dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// runCommand is command without the test: the error says whether the
// deadline passed.
func runCommand(timeout time.Duration, dir string, env []string, name string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env, cmd.WaitDelay = dir, env, 5*time.Second
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("no end within %s (%w)", timeout, ctx.Err())
	}
	return o.String(), e.String(), err
}

// expectedVersion is the Debian version of the checkout, and the commit
// time every file in the package carries.
func expectedVersion(t *testing.T) (string, time.Time) {
	t.Helper()
	describe := strings.TrimSpace(command(t, 30*time.Second, repo, nil, "git", "describe", "--tags", "--always", "--dirty"))
	epoch, err := strconv.ParseInt(strings.TrimSpace(command(t, 30*time.Second, repo, nil, "git", "log", "-1", "--format=%ct")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	v, err := DebianVersion(describe, time.Unix(epoch, 0))
	if err != nil {
		t.Fatal(err)
	}
	return v, time.Unix(epoch, 0)
}

// debs returns the package files of this checkout by architecture: those
// in MP_HSM_DEB_DIR, or, without it, those of a build here.
func debs(t *testing.T) map[string]string {
	t.Helper()
	needTools(t)
	dir := os.Getenv("MP_HSM_DEB_DIR")
	if dir == "" {
		dir = buildDebs(t, "first")
	}
	version, _ := expectedVersion(t)
	out := map[string]string{}
	for _, arch := range arches {
		f := filepath.Join(dir, "mp-hsm_"+version+"_"+arch+".deb")
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("no package for this checkout (%v): run make deb, or unset MP_HSM_DEB_DIR", err)
		}
		out[arch] = f
	}
	return out
}

// buildDebs runs scripts/deb.sh (without lintian: make deb runs it) into
// a directory of its own, once per name.
func buildDebs(t *testing.T, name string) string {
	t.Helper()
	builtMu.Lock()
	defer builtMu.Unlock()
	if dir, ok := built[name]; ok {
		return dir
	}
	dir := filepath.Join(work, "dist-"+name)
	env := append(os.Environ(), "DIST="+dir, "LINTIAN=0", "ARCHES="+strings.Join(arches, " "))
	start := time.Now()
	command(t, 8*time.Minute, repo, env, "./scripts/deb.sh")
	t.Logf("built the packages (%s) in %s", name, time.Since(start).Round(time.Second))
	built[name] = dir
	return dir
}

// unpack extracts the package of arch with dpkg-deb -x (no install) and
// returns the tree.
func unpack(t *testing.T, arch string) string {
	t.Helper()
	deb := debs(t)[arch]
	unpackMu.Lock()
	defer unpackMu.Unlock()
	if dir, ok := unpacked[arch]; ok {
		return dir
	}
	dir := filepath.Join(work, "root-"+arch)
	command(t, time.Minute, "", nil, "dpkg-deb", "-x", deb, dir)
	command(t, time.Minute, "", nil, "dpkg-deb", "-e", deb, filepath.Join(dir, "DEBIAN"))
	unpacked[arch] = dir
	return dir
}

func TestControlFields(t *testing.T) {
	version, _ := expectedVersion(t)
	for arch, deb := range debs(t) {
		root := unpack(t, arch)
		libc, err := LibcDepends(filepath.Join(root, "usr/bin/mp-hsm"))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"Package": "mp-hsm", "Version": version, "Architecture": arch, "Depends": libc,
			"Recommends": "pcscd, opensc-pkcs11, bash-completion", "Suggests": "softhsm2", "Section": "utils",
		}
		for field, w := range want {
			if got := strings.TrimSpace(command(t, time.Minute, "", nil, "dpkg-deb", "-f", deb, field)); got != w {
				t.Errorf("%s: %s = %q, want %q", filepath.Base(deb), field, got, w)
			}
		}
		if !regexp.MustCompile(`^libc6 \(>= 2\.[0-9]+\)$`).MatchString(libc) {
			t.Errorf("%s: Depends %q is not a libc6 version", arch, libc)
		}
	}
}

// The libc6 dependency read from the binary is the one Debian's own tool
// computes (for this machine's architecture, whose libc6 is installed).
func TestDependsAgreesWithDpkgShlibdeps(t *testing.T) {
	root := unpack(t, "amd64")
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "debian"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "debian/control"), []byte("Source: mp-hsm\n\nPackage: mp-hsm\nArchitecture: any\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := command(t, time.Minute, src, nil, "dpkg-shlibdeps", "-O", filepath.Join(root, "usr/bin/mp-hsm"))
	ours, err := LibcDepends(filepath.Join(root, "usr/bin/mp-hsm"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "shlibs:Depends=")); got != ours {
		t.Errorf("dpkg-shlibdeps says %q, the package says %q", got, ours)
	}
}

// wantFiles are the files of the package, besides the man pages.
var wantFiles = []string{
	"etc/mp-hsm/mp-hsm.env",
	"usr/bin/mp-hsm",
	"usr/lib/systemd/system/mp-hsm.service",
	"usr/lib/systemd/system/mp-hsm.socket",
	"usr/lib/sysusers.d/mp-hsm.conf",
	"usr/lib/tmpfiles.d/mp-hsm.conf",
	"usr/share/bash-completion/completions/mp-hsm",
	"usr/share/doc/mp-hsm/changelog.gz",
	"usr/share/doc/mp-hsm/copyright",
	"usr/share/doc/mp-hsm/daemon.md.gz",
	"usr/share/doc/mp-hsm/lifecycle.md.gz",
	"usr/share/fish/vendor_completions.d/mp-hsm.fish",
	"usr/share/zsh/vendor-completions/_mp-hsm",
}

// listingRe is a line of dpkg-deb -c: mode, owner/group, size, date, time, path.
var listingRe = regexp.MustCompile(`^([-dlrwxs]{10}) (\S+)\s+\d+ (\d{4}-\d\d-\d\d \d\d:\d\d) \./(.*)$`)

func TestFileListOwnersAndDates(t *testing.T) {
	_, commit := expectedVersion(t)
	stamp := commit.UTC().Format("2006-01-02 15:04")
	for arch, deb := range debs(t) {
		var files []string
		for _, line := range strings.Split(strings.TrimSpace(command(t, time.Minute, "", append(os.Environ(), "TZ=UTC"), "dpkg-deb", "-c", deb)), "\n") {
			m := listingRe.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s: unexpected dpkg-deb -c line %q", arch, line)
			}
			mode, owner, date, path := m[1], m[2], m[3], m[4]
			if owner != "root/root" || date != stamp {
				t.Errorf("%s: %s is %s, dated %s; want root/root, dated %s (the commit)", arch, path, owner, date, stamp)
			}
			switch {
			case mode[0] == 'd':
				if mode != "drwxr-xr-x" {
					t.Errorf("%s: directory %s has mode %s", arch, path, mode)
				}
			case path == "usr/bin/mp-hsm":
				if mode != "-rwxr-xr-x" {
					t.Errorf("%s: %s has mode %s", arch, path, mode)
				}
			default:
				if mode != "-rw-r--r--" {
					t.Errorf("%s: %s has mode %s", arch, path, mode)
				}
			}
			if mode[0] != 'd' {
				files = append(files, path)
			}
		}
		var rest []string
		for _, f := range files {
			if !strings.HasPrefix(f, "usr/share/man/man1/") {
				rest = append(rest, f)
			} else if !strings.HasSuffix(f, ".1.gz") {
				t.Errorf("%s: man page %s is not gzipped section 1", arch, f)
			}
		}
		sort.Strings(rest)
		if strings.Join(rest, "\n") != strings.Join(wantFiles, "\n") {
			t.Errorf("%s: files\n%s\nwant\n%s", arch, strings.Join(rest, "\n"), strings.Join(wantFiles, "\n"))
		}
	}
}

func TestConffileAndMaintainerScripts(t *testing.T) {
	ctrl := filepath.Join(unpack(t, "amd64"), "DEBIAN")
	conffiles, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	if string(conffiles) != "/etc/mp-hsm/mp-hsm.env\n" {
		t.Errorf("conffiles = %q, want the example configuration only", conffiles)
	}
	// Nothing enables or starts the daemon: it has no configuration yet.
	forbidden := regexp.MustCompile(`\b(enable|start|restart|unmask)\b`)
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		path := filepath.Join(ctrl, s)
		command(t, time.Minute, "", nil, "sh", "-n", path)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			code, _, _ := strings.Cut(line, "#")
			if forbidden.MatchString(strings.ReplaceAll(code, "try-restart", "")) {
				t.Errorf("%s:%d enables or starts something: %s", s, i+1, line)
			}
		}
	}
	postinst, _ := os.ReadFile(filepath.Join(ctrl, "postinst"))
	for _, want := range []string{"systemd-sysusers mp-hsm.conf", "systemd-tmpfiles --create mp-hsm.conf", "daemon-reload", "try-restart mp-hsm.service"} {
		if !strings.Contains(string(postinst), want) {
			t.Errorf("postinst lacks %q", want)
		}
	}
}

// The same commit built twice gives the same bytes. (The Go build cache
// may serve the compiled packages; the link, the man pages, the
// copyright file and dpkg-deb all run again.)
func TestReproducible(t *testing.T) {
	t.Parallel()
	first := debs(t)
	again := buildDebs(t, "again")
	for arch, f := range first {
		a, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(again, filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two builds differ (%d and %d bytes): compare them with diffoscope", arch, len(a), len(b))
		}
	}
}

func TestCopyrightFile(t *testing.T) {
	root := unpack(t, "amd64")
	data, err := os.ReadFile(filepath.Join(root, "usr/share/doc/mp-hsm/copyright"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, want := range []string{
		"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n",
		"Files: *\nCopyright: the mp-hsm authors\nLicense: Apache-2.0\n",
		"/usr/share/common-licenses/Apache-2.0",
		"Files: github.com/miekg/pkcs11/*\n",
		"Files: github.com/urfave/cli/v2/*\n",
		"Files: std/*\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("copyright lacks %q", want)
		}
	}
	// Every line is a field, a continuation (a space first) or the empty
	// line between paragraphs.
	field := regexp.MustCompile(`^[A-Z][A-Za-z-]+: ?`)
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if line != "" && !strings.HasPrefix(line, " ") && !field.MatchString(line) {
			t.Errorf("copyright line %d is neither a field nor a continuation: %q", i+1, line)
		}
	}
}
