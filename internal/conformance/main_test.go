//go:build cgo

package conformance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/internal/backends"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// starter is a backend's Start function under its name.
type starter struct {
	name  string
	start func(dir string) (*backends.Running, error)
}

// starters are the backends, in the order of docs/COMPATIBILITY.md.
var starters = []starter{
	{"softhsm2", backends.StartSoftHSM},
	{"p11-kit-proxy", backends.StartP11KitProxy},
	{"pkcs11-spy", backends.StartSpy},
	{"p11-kit-rpc", backends.StartP11KitRPC},
	{"tpm2-pkcs11", backends.StartTPM},
	{"opencryptoki", backends.StartOpenCryptoki},
	{"card", func(dir string) (*backends.Running, error) { return backends.StartCard(dir, suite.ca) }},
}

// suite is what TestMain set up for the tests.
var suite struct {
	running  map[string]*backends.Running // by starter name, the backends that started
	startErr map[string]error             // by starter name, why a backend did not start
	env      []string                     // the union of the started backends' Env
	rec      *Recorder
	ca       *softhsm.CA // issues every backend's certificates; the emulator trusts its root

	bin    string // the mp-hsm binary
	binErr error
	binOK  chan struct{} // closed when the build ended

	// closers close what the tests opened on the modules (hsm.Module),
	// after every test: one backend's C_Finalize may reach a module
	// another backend still uses (pkcs11-spy and p11-kit's proxy load
	// the same libsofthsm2.so, p11-kit also tpm2-pkcs11).
	mu      sync.Mutex
	closers []func() error
}

// atEnd adds f to what TestMain runs after the tests, before the backends
// stop.
func atEnd(f func() error) {
	suite.mu.Lock()
	defer suite.mu.Unlock()
	suite.closers = append(suite.closers, f)
}

// ci reports whether the suite runs under CI (CI=true, or any value, as
// elsewhere in the project), where a backend that cannot start fails it.
func ci() bool { return os.Getenv("CI") != "" }

// TestMain starts every backend once, in parallel, and builds the mp-hsm
// binary meanwhile; sets the union of the backends' Env in this process,
// whose HOME and XDG directories it moves to a temporary directory (so
// that modules loaded here, p11-kit's proxy above all, write nothing in
// the real ones); runs the tests; then closes the modules and stops the
// backends.
func TestMain(m *testing.M) {
	// opencryptoki's soft token is machine-wide: the suite runs in a
	// mount namespace with one of its own (backends.Private).
	if code, ran := backends.Private(); ran {
		os.Exit(code)
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	backends.PreloadModules() // before any module: see its doc
	buildEnv := os.Environ()  // the real HOME: Go's build cache is shared
	tmp, err := os.MkdirTemp("", "mp-hsm-conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	home := filepath.Join(tmp, "home")
	for k, v := range map[string]string{
		"HOME": home, "XDG_CONFIG_HOME": filepath.Join(home, ".config"),
		"XDG_DATA_HOME": filepath.Join(home, ".local", "share"), "XDG_CACHE_HOME": filepath.Join(home, ".cache"),
	} {
		if err := errors.Join(os.MkdirAll(v, 0o700), os.Setenv(k, v)); err != nil {
			fmt.Fprintln(os.Stderr, "conformance:", err)
			return 1
		}
	}

	if suite.rec, err = NewRecorder(os.Getenv("MP_HSM_COMPAT_OUT")); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		return 1
	}
	defer suite.rec.Close()

	if suite.ca, err = softhsm.NewCA(softhsm.EnvTest); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		return 1
	}

	suite.binOK = make(chan struct{})
	go func() {
		defer close(suite.binOK)
		suite.bin, suite.binErr = buildBinary(buildEnv, filepath.Join(tmp, "bin"))
	}()

	startAll(tmp)
	initInOrder()
	code := m.Run()

	<-suite.binOK
	for i := len(suite.closers) - 1; i >= 0; i-- {
		if err := suite.closers[i](); err != nil {
			fmt.Fprintln(os.Stderr, "conformance: closing:", err)
		}
	}
	// p11-kit's proxy first: its C_Finalize reaches the modules it loaded,
	// whose daemons must still run.
	for _, s := range []string{"p11-kit-proxy", "pkcs11-spy", "p11-kit-rpc", "softhsm2", "tpm2-pkcs11", "opencryptoki", "card"} {
		if r := suite.running[s]; r != nil {
			if err := r.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "conformance: stopping %s: %v\n", s, err)
			}
		}
	}
	if ci() && len(suite.startErr) > 0 && code == 0 {
		code = 1
	}
	return code
}

// startTimeout bounds the start of all backends together. It exceeds
// the 5 minutes StartOpenCryptoki waits for another process's use of the
// machine's one soft token (go test runs packages in parallel), so that
// its own error comes first.
const startTimeout = 6 * time.Minute

// startAll starts every backend in a directory of its own under tmp, in
// parallel, and sets the union of their Env in this process. A backend
// whose Env conflicts with an earlier one's does not count as started.
func startAll(tmp string) {
	suite.running = map[string]*backends.Running{}
	suite.startErr = map[string]error{}
	type started struct {
		r   *backends.Running
		err error
	}
	results := make([]started, len(starters))
	done := make([]chan started, len(starters))
	for i, s := range starters {
		done[i] = make(chan started, 1)
		go func() {
			var st started
			dir := filepath.Join(tmp, s.name)
			if st.err = os.Mkdir(dir, 0o700); st.err == nil {
				st.r, st.err = s.start(dir)
			}
			done[i] <- st
		}()
	}
	// Start functions bound their own commands; this bounds them all, so
	// that a hang names the backend instead of ending in go test's timeout.
	deadline := time.After(startTimeout)
	for i, s := range starters {
		select {
		case results[i] = <-done[i]:
		case <-deadline:
			results[i].err = fmt.Errorf("%s did not start within %v", s.name, startTimeout)
		}
	}
	set := map[string]string{}
	owner := map[string]string{}
	for i, s := range starters {
		r, err := results[i].r, results[i].err
		if err == nil && r == nil {
			err = errors.New("Start returned no backend and no error")
		}
		if err == nil {
			err = envConflict(r, set, owner)
		}
		if err != nil {
			if r != nil {
				r.Stop()
			}
			suite.startErr[s.name] = err
			continue
		}
		for _, kv := range r.Env {
			k, v, _ := strings.Cut(kv, "=")
			set[k], owner[k] = v, s.name
			os.Setenv(k, v)
			suite.env = append(suite.env, kv)
		}
		suite.running[s.name] = r
	}
}

// initOrder is the order in which initInOrder initialises the modules in
// this process: p11-kit's proxy last.
var initOrder = []string{"tpm2-pkcs11", "opencryptoki", "card", "softhsm2", "pkcs11-spy", "p11-kit-rpc", "p11-kit-proxy"}

// initInOrder initialises every started backend's module in this process
// (through the backend's own handle), p11-kit's proxy last. The proxy
// also initialises the modules registered with p11-kit (tpm2-pkcs11,
// SoftHSM2), and finalises those it initialised when it is finalised or
// fails: under the backend that uses the same module directly, whose
// sessions then die (CKR_SESSION_HANDLE_INVALID, seen on tpm2-pkcs11).
// A module that another user initialised first answers the proxy
// CKR_CRYPTOKI_ALREADY_INITIALIZED, and p11-kit then never finalises it.
// A backend whose module cannot be initialised counts as not started.
func initInOrder() {
	for _, name := range initOrder {
		r := suite.running[name]
		if r == nil {
			continue
		}
		if _, err := r.HasMechanism(pkcs11.CKM_RSA_PKCS); err != nil {
			suite.startErr[name] = fmt.Errorf("initialising its module in the test process: %w", err)
			delete(suite.running, name)
			r.Stop()
		}
	}
}

// envConflict says which variable of r.Env another backend already set
// to another value, if one does.
func envConflict(r *backends.Running, set, owner map[string]string) error {
	for _, kv := range r.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("Env entry %q is not KEY=VALUE", kv)
		}
		if old, seen := set[k]; seen && old != v {
			return fmt.Errorf("Env sets %s=%s, but %s needs %s=%s in the same process", k, v, owner[k], k, old)
		}
	}
	return nil
}

// buildBinary builds mp-hsm into dir with env, as the end-to-end tests of
// cmd/mp-hsm do (go build -o, no other flags: Go's build cache is shared).
func buildBinary(env []string, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "mp-hsm")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/mp-hsm/mp-hsm/cmd/mp-hsm")
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build mp-hsm: %w\n%s", err, out)
	}
	return bin, nil
}

// binary returns the mp-hsm binary, waiting for its build.
func binary(t testing.TB) string {
	t.Helper()
	<-suite.binOK
	if suite.binErr != nil {
		t.Fatal(suite.binErr)
	}
	return suite.bin
}
