//go:build cgo

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// noCgoBinary is mp-hsm built with CGO_ENABLED=0, once per test process.
var noCgoBinary struct {
	once sync.Once
	dir  string // removed by TestMain
	path string
	err  error
}

// binaryNoCgo returns the path of mp-hsm built with CGO_ENABLED=0, as a
// user without a C compiler, or cross-compiling, gets it.
func binaryNoCgo(t testing.TB) string {
	t.Helper()
	b := &noCgoBinary
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "mp-hsm-nocgo-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "mp-hsm")
		cmd := testexec.Command(t, 5*time.Minute, "go", "build", "-o", b.path, ".")
		cmd.Env = testexec.Setenv(os.Environ(), "CGO_ENABLED=0")
		if res := testexec.Run(t, cmd); res.Code != 0 {
			b.err = fmt.Errorf("CGO_ENABLED=0 go build: exit %d\n%s", res.Code, res.Stderr)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// TestE2ENoCgo: mp-hsm built without cgo runs everything that needs no
// PKCS#11 (--version, emulate, token, grant, doctor and serve with --p12,
// inspect), and refuses what does (list, token without --p12, doctor of
// a token) with exit 2 and a message saying why and what works.
func TestE2ENoCgo(t *testing.T) {
	t.Parallel()
	bin := binaryNoCgo(t)
	run := func(env []string, args ...string) cliResult {
		t.Helper()
		cmd := testexec.Command(t, 0, bin, args...)
		cmd.Env = testexec.Env(t.TempDir(), env...)
		r := testexec.Run(t, cmd)
		return cliResult{args: args, stdout: r.Stdout, stderr: r.Stderr, code: r.Code}
	}

	if res := run(nil, "--version"); res.code != 0 || !strings.HasPrefix(res.stdout, "mp-hsm version ") {
		t.Fatalf("--version: %v", res)
	}

	// A soft enterprise certificate from the test PKI.
	const password = "nocgo-p12-password"
	ca, _, p12 := softP12(t, password)
	dir := t.TempDir()
	root := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(root, ca.RootPEM(), 0o600); err != nil {
		t.Fatal(err)
	}

	// The emulator of the same binary.
	emu := startEmulate(t, bin, []string{"MP_HSM_EMULATE_ORG_NUMBER=" + softhsm.DefaultOrgNumber},
		"--root", root, "--client-id", "nocgo-client", "--scope", "nocgo:read")
	wk, p, emErr := emu.wellKnown, emu.proc, emu.stderr

	p12Env := []string{"MP_HSM_P12_PASSWORD=" + password}
	tokenArgs := []string{"--client-id", "nocgo-client", "--scope", "nocgo:read", "--well-known", wk}
	res := run(p12Env, append([]string{"token", "--p12", p12}, tokenArgs...)...)
	if res.code != 0 || strings.Count(strings.TrimSpace(res.stdout), ".") != 2 {
		t.Fatalf("token --p12: %v", res)
	}
	res = run(nil, "inspect", strings.TrimSpace(res.stdout))
	if res.code != 0 || !strings.Contains(res.stdout, "nocgo:read") {
		t.Fatalf("inspect of the token: %v", res)
	}
	res = run(p12Env, append([]string{"grant", "--p12", p12}, tokenArgs...)...)
	if res.code != 0 || !strings.HasPrefix(res.stdout, "eyJ") {
		t.Fatalf("grant --p12: %v", res)
	}
	res = run(p12Env, append([]string{"doctor", "--p12", p12}, tokenArgs...)...)
	if res.code != 0 || !strings.Contains(res.stdout, "token-request") {
		t.Fatalf("doctor --p12: %v", res)
	}
	if strings.Contains(res.stdout+res.stderr, password) {
		t.Fatal("the PKCS#12 password appears in the output")
	}

	// The daemon with the PKCS#12 key, on a unix socket.
	sockDir, err := os.MkdirTemp("", "mphsm") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "s.sock")
	sv := testexec.Command(t, 2*time.Minute, bin, append([]string{"serve", "--p12", p12, "--listen", "unix:" + sock}, tokenArgs[:2]...)...)
	sv.Env = testexec.Env(sockDir, append(p12Env, "MP_HSM_WELL_KNOWN="+wk)...)
	var svErr testexec.Buffer
	sv.Stderr = &svErr
	svp := testexec.Start(t, sv)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("serve --p12 made no socket: %s", svErr.String())
		}
	}
	a := servePost(t, c, "http://mp-hsm/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"nocgo:read"}}, "", "")
	if a.status != 200 || a.AccessToken == "" {
		t.Fatalf("serve --p12: %+v\n%s", a, svErr.String())
	}
	sv.Process.Signal(syscall.SIGTERM)
	if err := svp.Err(); err != nil {
		t.Errorf("serve after SIGTERM: %v, want exit 0\nstderr: %s", err, svErr.String())
	}

	// What needs PKCS#11 says so, with exit 2.
	const why = "this mp-hsm was built without cgo: PKCS#11 tokens need a cgo build (CGO_ENABLED=1); --p12 works"
	for _, args := range [][]string{
		{"list"},
		{"list", "--module", "/usr/lib/softhsm/libsofthsm2.so"},
		append([]string{"token", "--slot", "0"}, tokenArgs...),
		{"jwk", "--token-label", "card"},
		{"serve", "--client-id", "nocgo-client", "--listen", "unix:" + filepath.Join(dir, "s.sock")},
	} {
		res := run(nil, args...)
		if res.code != exitUsage || !strings.Contains(res.stderr, why) {
			t.Errorf("want exit 2 saying %q, got %v", why, res)
		}
	}
	res = run(nil, append([]string{"doctor"}, tokenArgs...)...)
	if res.code != exitUsage || !strings.Contains(res.stdout, "fail  module") || !strings.Contains(res.stdout, why) {
		t.Errorf("doctor without --p12: want the module check failing with exit 2, got %v", res)
	}

	if err := p.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Err(); err != nil {
		t.Errorf("emulate after SIGTERM: %v, want exit 0\nstderr: %s", err, emErr.String())
	}
}
