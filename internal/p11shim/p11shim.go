// Package p11shim builds, for tests, a PKCS#11 module that forwards every
// call to a real module (SoftHSM2) and misbehaves on request: a wrong PIN
// reported loosely (CKR_FUNCTION_FAILED instead of CKR_PIN_INCORRECT), a
// slow C_Login, a device error in the middle of signing. These are the
// cases that no real token shows on demand; everything else is the real
// module's behaviour.
//
// The module is csrc/shim.c, compiled once per test process with the system C
// compiler against p11-kit's pkcs11.h (Debian's libp11-kit-dev, which make
// deps installs). It reads its settings from the environment of the
// process that loads it, at each call: give them to a subprocess with Env.
package p11shim

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/testexec"
)

//go:embed csrc/shim.c
var source []byte

// Header is where p11-kit's pkcs11.h lives on Debian.
const Header = "/usr/include/p11-kit-1/p11-kit/pkcs11.h"

var built struct {
	once sync.Once
	path string
	err  error
}

// Build compiles the shim on first use in the process and returns its
// path, in a temporary directory. Without gcc or the header the test is
// skipped, unless CI is set: then it fails.
func Build(t testing.TB) string {
	t.Helper()
	gcc := testexec.Tool(t, "gcc", "gcc")
	if _, err := os.Stat(Header); err != nil {
		msg := "p11-kit's pkcs11.h is not installed (apt-get install libp11-kit-dev, or make deps)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "p11shim-")
		if err != nil {
			built.err = err
			return
		}
		src := filepath.Join(dir, "shim.c")
		if err := os.WriteFile(src, source, 0o600); err != nil {
			built.err = err
			return
		}
		out := filepath.Join(dir, "p11shim.so")
		cmd := testexec.Command(t, 2*time.Minute, gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror",
			"-I"+filepath.Dir(filepath.Dir(Header)), "-o", out, src, "-ldl")
		cmd.Env = os.Environ()
		if res := testexec.Run(t, cmd); res.Code != 0 {
			built.err = fmt.Errorf("p11shim: gcc: %s", res)
			return
		}
		built.path = out
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// Options say how the shim misbehaves. The zero value forwards everything
// unchanged.
type Options struct {
	// Real is the module the shim forwards to. Required.
	Real string
	// LoginRV, when non-zero, replaces CKR_PIN_INCORRECT from the real
	// module's C_Login (0x6 is CKR_FUNCTION_FAILED, 0x30 CKR_DEVICE_ERROR).
	LoginRV uint
	// LoginSleep makes each C_Login wait this long first (whole seconds).
	LoginSleep time.Duration
	// SignFailAfter, when positive, makes C_Sign return CKR_DEVICE_ERROR
	// after that many signatures.
	SignFailAfter int
	// CountFile, when set, gets one line per C_Login call: "C_Login" or
	// "C_Login(CKU_CONTEXT_SPECIFIC)".
	CountFile string
}

// Env returns the environment entries (KEY=value) that set o for the
// process that loads the shim.
func (o Options) Env() []string {
	env := []string{"P11SHIM_MODULE=" + o.Real}
	if o.LoginRV != 0 {
		env = append(env, "P11SHIM_LOGIN_RV=0x"+strconv.FormatUint(uint64(o.LoginRV), 16))
	}
	if o.LoginSleep > 0 {
		env = append(env, "P11SHIM_LOGIN_SLEEP="+strconv.Itoa(int(o.LoginSleep/time.Second)))
	}
	if o.SignFailAfter > 0 {
		env = append(env, "P11SHIM_SIGN_FAIL_AFTER="+strconv.Itoa(o.SignFailAfter))
	}
	if o.CountFile != "" {
		env = append(env, "P11SHIM_COUNT_FILE="+o.CountFile)
	}
	return env
}

// Count returns how many lines equal to call the count file holds.
func Count(t testing.TB, countFile, call string) int {
	t.Helper()
	data, err := os.ReadFile(countFile)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		if l == call {
			n++
		}
	}
	return n
}
