package imagetest

// The image under podman, as a Kubernetes pod runs it: as the image's own
// user, the key on a SoftHSM2 token behind `p11-kit server` on the host,
// whose socket is mounted into the container (the HSM's client in one
// place, mp-hsm in another), the emulator as Maskinporten on loopback.
//
// podman runs with a configuration and storage of the test's own in a
// temporary directory: runc, the cgroupfs manager, no default ulimits,
// the vfs driver (overlay does not work inside every container), host
// networking to reach the emulator on loopback.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// uid is the image's user, as scripts/image.sh makes it.
const uid = 65532

// repo is the checkout's root.
var repo, _ = filepath.Abs("../..")

// archivePath is the image archive under test, or the test skips.
func archivePath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("MP_HSM_IMAGE")
	if p == "" {
		t.Skip("MP_HSM_IMAGE names no image archive: make test-image builds one and runs this test")
	}
	return p
}

// run runs name with args within timeout and returns its stdout; it fails
// the test with both outputs otherwise.
func run(t *testing.T, timeout time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.WaitDelay = env, 5*time.Second
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("no end within %s (%w)", timeout, ctx.Err())
	}
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, o.String(), e.String())
	}
	return o.String()
}

// background is a long-running process: stopped with SIGTERM at cleanup.
type background struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
}

// start runs name in the background with a deadline of five minutes and
// returns it and the first line of its stdout, which must come within a
// minute.
func start(t *testing.T, env []string, name string, args ...string) (*background, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	b := &background{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = b.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- strings.TrimSpace(line)
		io.Copy(io.Discard, stdout)
	}()
	go func() { b.done <- cmd.Wait() }()
	t.Cleanup(func() { cancel(); <-b.done })
	select {
	case line := <-lines:
		return b, line
	case <-time.After(time.Minute):
		t.Fatalf("%s %s printed nothing within a minute; stderr:\n%s", name, strings.Join(args, " "), b.stderr)
	}
	return nil, ""
}

// stop sends SIGTERM and wants an end within 30 s, and a clean one if
// clean is set (p11-kit server ends with status 255 on SIGTERM).
func (b *background) stop(t *testing.T, clean bool) {
	t.Helper()
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-b.done:
		b.done <- err // for the cleanup
		if err != nil && clean {
			t.Errorf("%s ended with %v after SIGTERM; stderr:\n%s", b.cmd, err, b.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not end within 30 s of SIGTERM", b.cmd)
	}
}

// podman is podman with a configuration and storage of the test's own.
type podman struct {
	env  []string
	args []string
}

func (p *podman) cmd(args ...string) (string, []string) {
	return "podman", append(p.args[:len(p.args):len(p.args)], args...)
}

func (p *podman) run(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	name, a := p.cmd(args...)
	return run(t, timeout, p.env, name, a...)
}

// newPodman sets podman up in dir. Where podman does not work, the test
// is skipped, loudly; with CI set it fails instead, so that a CI job
// cannot pass without the image test.
func newPodman(t *testing.T, dir string) *podman {
	t.Helper()
	conf := filepath.Join(dir, "containers.conf")
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(conf, []byte(`[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
image_copy_tmp_dir = "`+tmp+`"
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := &podman{
		env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir, "TMPDIR=" + tmp, "CONTAINERS_CONF=" + conf},
		args: []string{"--root", filepath.Join(dir, "storage"), "--runroot", filepath.Join(dir, "run"),
			"--storage-driver", "vfs", "--tmpdir", filepath.Join(dir, "libpod")},
	}
	name, args := p.cmd("info")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = p.env
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := fmt.Sprintf("\n*****\n***** THE IMAGE TEST IS SKIPPED: podman does not work here (%v)\n***** %s\n*****",
			err, strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n***** "))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + "\n***** (with CI set, this fails the test)")
	}
	return p
}

// imageConfig is what podman image inspect says of the image.
type imageConfig struct {
	Config struct {
		User       string
		Entrypoint []string
		Labels     map[string]string
	}
}

func TestImage(t *testing.T) {
	archive := archivePath(t)
	for _, tool := range []string{"podman", "skopeo", "p11-kit", "setpriv", "/usr/lib/softhsm/libsofthsm2.so"} {
		var err error
		if filepath.IsAbs(tool) {
			_, err = os.Stat(tool)
		} else {
			_, err = exec.LookPath(tool)
		}
		if err != nil {
			t.Fatalf("%s is missing: scripts/deps.sh installs it (%v)", tool, err)
		}
	}
	// Not t.TempDir: the image's user must reach the token store and the
	// sockets under it.
	dir, err := os.MkdirTemp("", "mp-hsm-image-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pm := newPodman(t, filepath.Join(dir, "podman"))

	loaded := pm.run(t, 2*time.Minute, "load", "--input", archive)
	_, image, ok := strings.Cut(strings.TrimSpace(loaded), "Loaded image: ")
	if !ok || !strings.HasPrefix(image, "localhost/mp-hsm:") {
		t.Fatalf("podman load printed %q, want Loaded image: localhost/mp-hsm:TAG", loaded)
	}
	describe := strings.TrimSpace(run(t, 30*time.Second, nil, "git", "-C", repo, "describe", "--tags", "--always", "--dirty"))
	revision := strings.TrimSpace(run(t, 30*time.Second, nil, "git", "-C", repo, "rev-parse", "HEAD"))

	t.Run("Config", func(t *testing.T) {
		var cfgs []imageConfig
		if err := json.Unmarshal([]byte(pm.run(t, time.Minute, "image", "inspect", image)), &cfgs); err != nil || len(cfgs) != 1 {
			t.Fatalf("podman image inspect: %v (%d images)", err, len(cfgs))
		}
		c := cfgs[0].Config
		if want := fmt.Sprintf("%d:%d", uid, uid); c.User != want {
			t.Errorf("User %q, want the numeric non-root %q", c.User, want)
		}
		if strings.Join(c.Entrypoint, " ") != "/usr/bin/mp-hsm" {
			t.Errorf("Entrypoint %q, want [/usr/bin/mp-hsm]", c.Entrypoint)
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.source":   "https://github.com/mp-hsm/mp-hsm",
			"org.opencontainers.image.revision": revision,
			"org.opencontainers.image.version":  describe,
			"org.opencontainers.image.licenses": "Apache-2.0",
		} {
			if c.Labels[k] != want {
				t.Errorf("label %s = %q, want %q", k, c.Labels[k], want)
			}
		}
	})

	t.Run("SkopeoCopies", func(t *testing.T) {
		dst := filepath.Join(dir, "skopeo-oci")
		run(t, 2*time.Minute, pm.env, "skopeo", "copy", "--quiet", "oci-archive:"+archive, "oci:"+dst+":mp-hsm")
		if _, err := os.Stat(filepath.Join(dst, "index.json")); err != nil {
			t.Errorf("skopeo copy wrote no OCI layout: %v", err)
		}
	})

	t.Run("Version", func(t *testing.T) {
		out := pm.run(t, time.Minute, "run", "--rm", "--network=none", image, "--version")
		if want := "mp-hsm version " + describe + " ("; !strings.HasPrefix(out, want) {
			t.Errorf("--version printed %q, want it to start with %q", out, want)
		}
	})

	// The key: the demo token, served by p11-kit server running as the
	// image's user (p11-kit admits callers of its own uid and root only).
	store := filepath.Join(dir, "store")
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go on PATH to build with: %v", err)
	}
	provision := exec.Command(goTool, "run", "./softhsm/cmd/provision", "-dir", store)
	provision.Dir = repo
	if out, err := runWithDeadline(provision, 3*time.Minute); err != nil {
		t.Fatalf("provision: %v\n%s", err, out)
	}
	p11dir := filepath.Join(dir, "p11-kit")
	appdir := filepath.Join(dir, "app")
	for _, d := range []string{p11dir, appdir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{store, p11dir, appdir} {
		chownTree(t, d, uid)
	}
	server, addr := start(t, []string{"PATH=/usr/bin:/bin", "SOFTHSM2_CONF=" + filepath.Join(store, "softhsm2.conf")},
		"setpriv", "--reuid", fmt.Sprint(uid), "--regid", fmt.Sprint(uid), "--clear-groups",
		"p11-kit", "server", "--foreground", "--name", filepath.Join(p11dir, "pkcs11"),
		"--provider", "/usr/lib/softhsm/libsofthsm2.so", "pkcs11:token=mp-hsm-demo")
	if want := "P11_KIT_SERVER_ADDRESS=unix:path=" + filepath.Join(p11dir, "pkcs11"); !strings.HasPrefix(addr, want) {
		t.Fatalf("p11-kit server printed %q, want %s...; stderr:\n%s", addr, want, server.stderr)
	}

	// Maskinporten: the emulator from the image, on the host's loopback.
	name, args := pm.cmd("run", "--rm", "--network=host", "-v", filepath.Join(store, "root.pem")+":/run/root.pem:ro", image,
		"emulate", "--root", "/run/root.pem", "--client-id", "image-test", "--org-number", "910000004", "--scope", "image:test")
	emu, wellKnown := start(t, pm.env, name, args...)
	if !strings.HasPrefix(wellKnown, "http://127.0.0.1:") {
		t.Fatalf("the emulator printed %q, not its metadata URL; stderr:\n%s", wellKnown, emu.stderr)
	}

	// What every run of mp-hsm with the key gets: the p11-kit socket and the PIN file.
	keyArgs := []string{"--network=host",
		"-v", p11dir + ":/run/p11-kit:ro", "-e", "P11_KIT_SERVER_ADDRESS=unix:path=/run/p11-kit/pkcs11",
		"-v", filepath.Join(store, "pin") + ":/run/secrets/mp-hsm/pin:ro"}
	keyFlags := []string{"--module", "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so", "--token-label", "mp-hsm-demo",
		"--key-id", "01", "--pin-file", "/run/secrets/mp-hsm/pin", "--client-id", "image-test", "--well-known", wellKnown}

	t.Run("TokenThroughP11KitSocket", func(t *testing.T) {
		args := append(append(append([]string{"run", "--rm"}, keyArgs...), image, "token"), keyFlags...)
		out := pm.run(t, 2*time.Minute, append(args, "--scope", "image:test")...)
		checkToken(t, strings.TrimSpace(out))
	})

	t.Run("ServeAsSidecar", func(t *testing.T) {
		args := append(append([]string{"run", "--rm", "-v", appdir + ":/run/mp-hsm"}, keyArgs...), image, "serve")
		args = append(append(args, keyFlags...), "--listen", "unix:/run/mp-hsm/mp-hsm.sock")
		name, a := pm.cmd(args...)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, a...)
		cmd.Env = pm.env
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 20 * time.Second
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		defer func() { cancel(); <-done }()

		sock := filepath.Join(appdir, "mp-hsm.sock")
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			}}}
		deadline := time.Now().Add(time.Minute)
		for {
			resp, err := client.Get("http://mp-hsm/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the daemon was not ready within a minute (%v); its output:\n%s", err, stderr.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
		// The socket is the image user's: the daemon runs as it.
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || fi.Mode().Perm() != 0o600 {
			t.Errorf("the socket is owned by uid %d with mode %v, want uid %d and 0600", st.Uid, fi.Mode().Perm(), uid)
		}
		resp, err := client.PostForm("http://mp-hsm/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"image:test"}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			AccessToken string `json:"access_token"`
			TokenType   string `json:"token_type"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.TokenType != "Bearer" {
			t.Fatalf("POST /token: %s, %v, token_type %q; daemon output:\n%s", resp.Status, err, body.TokenType, stderr.String())
		}
		checkToken(t, body.AccessToken)

		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			done <- err
			if err != nil {
				t.Errorf("the daemon ended with %v after SIGTERM; output:\n%s", err, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("the daemon did not end within 30 s of SIGTERM")
		}
		if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the socket is left behind after SIGTERM: %v", err)
		}
	})

	emu.stop(t, true)
	server.stop(t, false)
}

// checkToken wants an access token of the emulator for image-test with
// the scope image:test.
func checkToken(t *testing.T, tok string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%d bytes that are not a JWT", len(tok))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Scope    string `json:"scope"`
		ClientID string `json:"client_id"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Scope != "image:test" || claims.ClientID != "image-test" {
		t.Errorf("token claims %s (%v), want scope image:test for image-test", payload, err)
	}
}

// runWithDeadline runs cmd, killed after timeout, and returns its output.
func runWithDeadline(cmd *exec.Cmd, timeout time.Duration) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	timer := time.AfterFunc(timeout, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	return out.Bytes(), err
}

// chownTree gives dir and everything under it to uid.
func chownTree(t *testing.T, dir string, uid int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, uid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The archive make image wrote, built once more from the same package,
// has the same bytes.
func TestImageIsReproducible(t *testing.T) {
	archive := archivePath(t)
	debDir := os.Getenv("MP_HSM_IMAGE_DEB_DIR")
	if debDir == "" {
		t.Skip("MP_HSM_IMAGE_DEB_DIR names no package directory: make test-image sets it")
	}
	dist := t.TempDir()
	env := append(os.Environ(), "DEB_DIR="+debDir, "DIST="+dist)
	again := strings.TrimSpace(run(t, 5*time.Minute, env, filepath.Join(repo, "scripts/image.sh")))
	if filepath.Base(again) != filepath.Base(archive) {
		t.Fatalf("built %s again, want %s", filepath.Base(again), filepath.Base(archive))
	}
	sum := func(p string) string {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", sha256.Sum256(data))
	}
	a, b := sum(archive), sum(again)
	if a != b {
		t.Errorf("two builds of %s differ: sha256 %s and %s", filepath.Base(archive), a, b)
	}
	t.Logf("both builds: sha256 %s", a)
}
