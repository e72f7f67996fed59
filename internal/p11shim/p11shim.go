// Package p11shim builds, for tests, a PKCS#11 module that forwards every
// call to a real module (SoftHSM2) and misbehaves on request: a wrong PIN
// reported loosely (CKR_FUNCTION_FAILED instead of CKR_PIN_INCORRECT), a
// slow C_Login, a device error in the middle of signing that leaves the
// operation active, a module that refuses context-specific logins. These are the
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
	// after that many signatures (counted from the last C_Initialize, among
	// the signatures made while it is set), without asking the real module:
	// the real module's signing operation stays active, as tpm2-pkcs11's
	// does after a failed C_Sign.
	SignFailAfter int
	// SignFailures, when positive, lets only that many signatures fail
	// after SignFailAfter; zero fails every one.
	SignFailures int
	// SignRV, when non-zero, is the code failing signatures return
	// instead of CKR_DEVICE_ERROR (0x6 is CKR_FUNCTION_FAILED).
	SignRV uint
	// ContextLoginRV, when non-zero, is what C_Login(CKU_CONTEXT_SPECIFIC)
	// returns, without asking the real module (0x103 is
	// CKR_USER_TYPE_INVALID, opencryptoki's answer).
	ContextLoginRV uint
	// CheckParams makes C_Sign read the mechanism parameters given to
	// C_SignInit again, as tpm2-pkcs11 1.9 does: when they changed (freed
	// by the caller) it returns CKR_MECHANISM_INVALID, tpm2-pkcs11's
	// answer, and the count file gets "C_Sign=parameters changed".
	CheckParams bool
	// Noise, when set, is written with a newline to stderr at each
	// C_Initialize, as modules such as tpm2-pkcs11 write their errors.
	Noise string
	// AlwaysAuthenticate makes every private key say
	// CKA_ALWAYS_AUTHENTICATE true, which the real module does not enforce,
	// as opencryptoki stores the attribute and signs without a context
	// login. With ContextLoginRV 0x103 the shim is opencryptoki's case.
	AlwaysAuthenticate bool
	// CountFile, when set, gets one line per C_Login call: "C_Login" or
	// "C_Login(CKU_CONTEXT_SPECIFIC)"; "C_Sign=parameters changed" (see
	// CheckParams); one line
	// "C_SignInit=CKR_OPERATION_ACTIVE" per C_SignInit that the real module
	// refused because an operation was still active on the session; and
	// at each C_Initialize "progname=NAME", the program name glibc gives
	// the modules a process loads (program_invocation_short_name), which
	// p11-kit's enable-in and disable-in module options match.
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
	if o.SignFailures > 0 {
		env = append(env, "P11SHIM_SIGN_FAILURES="+strconv.Itoa(o.SignFailures))
	}
	if o.SignRV != 0 {
		env = append(env, "P11SHIM_SIGN_RV=0x"+strconv.FormatUint(uint64(o.SignRV), 16))
	}
	if o.ContextLoginRV != 0 {
		env = append(env, "P11SHIM_CONTEXT_LOGIN_RV=0x"+strconv.FormatUint(uint64(o.ContextLoginRV), 16))
	}
	if o.CheckParams {
		env = append(env, "P11SHIM_CHECK_PARAMS=1")
	}
	if o.Noise != "" {
		env = append(env, "P11SHIM_NOISE="+o.Noise)
	}
	if o.AlwaysAuthenticate {
		env = append(env, "P11SHIM_ALWAYS_AUTHENTICATE=1")
	}
	if o.CountFile != "" {
		env = append(env, "P11SHIM_COUNT_FILE="+o.CountFile)
	}
	return env
}

// variables are every variable the shim reads.
var variables = []string{"P11SHIM_MODULE", "P11SHIM_LOGIN_RV", "P11SHIM_LOGIN_SLEEP", "P11SHIM_SIGN_FAIL_AFTER",
	"P11SHIM_SIGN_FAILURES", "P11SHIM_SIGN_RV", "P11SHIM_CONTEXT_LOGIN_RV", "P11SHIM_ALWAYS_AUTHENTICATE", "P11SHIM_NOISE", "P11SHIM_COUNT_FILE",
	"P11SHIM_CHECK_PARAMS"}

// Setenv sets o for a shim loaded into this process, with t.Setenv, until
// the test ends: the variables o sets, and the others empty (which the
// shim reads as unset). The test cannot be parallel. The shim loads the
// real module once per process: o.Real must be the same in every test of
// the process. Its signature count (SignFailAfter) is per process too.
func (o Options) Setenv(t testing.TB) {
	t.Helper()
	set := map[string]string{}
	for _, kv := range o.Env() {
		k, v, _ := strings.Cut(kv, "=")
		set[k] = v
	}
	for _, k := range variables {
		t.Setenv(k, set[k])
	}
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
