//go:build cgo

package backends

import (
	"bytes"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/p11spy"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// ockNeed fails the test (under CI) or skips it when opencryptoki is not
// installed, or when the test is not root and no pkcsslotd runs (only root
// can start one).
func ockNeed(t *testing.T) {
	t.Helper()
	msg := ""
	if _, err := os.Stat(ockDaemon); err != nil {
		msg = "opencryptoki is not installed (apt-get install opencryptoki, or make deps)"
	} else if os.Geteuid() != 0 && len(ockDaemons()) == 0 {
		msg = "pkcsslotd is not running and only root can start it"
	}
	if msg == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// ockRecorded returns the pid the lock file names: that of the pkcsslotd
// the Running holding the lock started, or 0 when it uses one it did not
// start.
func ockRecorded(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(ockLockPath())
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// TestOpenCryptokiStartStop proves that Start brings up the daemon and an
// initialised token with our PINs, that the lock is held until Stop, that
// Stop ends the pkcsslotd it started and that Start works again after it.
func TestOpenCryptokiStartStop(t *testing.T) {
	ockNeed(t)
	var pids []int
	for i := range 2 {
		r, err := StartOpenCryptoki(t.TempDir())
		if err != nil {
			t.Fatalf("start %d: %v", i+1, err)
		}
		if r.Name != "opencryptoki" || r.Label != ockLabel || r.Serial == "" || r.PIN == "" || r.SOPIN == "" {
			t.Errorf("start %d: name %q label %q serial %q, PIN and SO PIN set: %v, %v",
				i+1, r.Name, r.Label, r.Serial, r.PIN != "", r.SOPIN != "")
		}
		if !strings.Contains(r.Version, "opencryptoki 3.") || !strings.Contains(r.Version, "libopencryptoki0 3.") {
			t.Errorf("Version = %q", r.Version)
		}
		// The lock is held: a second Start would wait.
		f, err := os.Open(ockLockPath())
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
			t.Errorf("start %d: the lock file is not locked: flock = %v", i+1, err)
		}
		if got, want := ockLockHolder(f), strconv.Itoa(os.Getpid()); got != want {
			t.Errorf("start %d: /proc/locks names %s as the lock's holder, want this process, %s", i+1, got, want)
		}
		f.Close()
		ti := ockTokenInfo(t, r)
		if strings.TrimSpace(ti.Label) != ockLabel || hsm.TokenFlags(ti.Flags).PINCountLow() {
			t.Errorf("start %d: token %q flags %s", i+1, ti.Label, hsm.TokenFlags(ti.Flags))
		}
		pid := ockRecorded(t)
		if pid != 0 && !ockAlive(pid) {
			t.Errorf("start %d: the recorded pkcsslotd %d is not running", i+1, pid)
		}
		if err := r.Stop(); err != nil {
			t.Fatalf("stop %d: %v", i+1, err)
		}
		if pid == 0 {
			t.Logf("start %d used a pkcsslotd it did not start", i+1)
			continue
		}
		if ockAlive(pid) {
			t.Errorf("stop %d: pkcsslotd %d still runs", i+1, pid)
		}
		if got := ockRecorded(t); got != 0 {
			t.Errorf("stop %d: the lock file still names pid %d", i+1, got)
		}
		pids = append(pids, pid)
	}
	if len(pids) == 2 && pids[0] == pids[1] {
		t.Errorf("both Starts report pkcsslotd %d", pids[0])
	}
}

// ockTokenInfo reads the soft token's information with a module of its
// own, initialised and finalised here.
func ockTokenInfo(t *testing.T, r *Running) pkcs11.TokenInfo {
	t.Helper()
	var ti pkcs11.TokenInfo
	ockSession(t, r, func(p *pkcs11.Ctx, slot uint, _ pkcs11.SessionHandle) {
		var err error
		if ti, err = p.GetTokenInfo(slot); err != nil {
			t.Fatal(err)
		}
	})
	return ti
}

// ockSession runs f with a read-write session on the soft token, logged in
// as the user when f needs it (login is done by f).
func ockSession(t *testing.T, r *Running, f func(p *pkcs11.Ctx, slot uint, sh pkcs11.SessionHandle)) {
	t.Helper()
	p := pkcs11.New(r.Module)
	if p == nil {
		t.Fatalf("cannot load %s", r.Module)
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Finalize(); err != nil {
			t.Error(err)
		}
	}()
	slot, _, err := ockSoftSlot(p)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(sh)
	f(p, slot, sh)
}

// ockKey is what the token says about a private key it generated.
type ockKey struct {
	pub                                   *rsa.PublicKey
	sensitive, extractable                bool
	alwaysSensitive, neverExtractable     bool
	alwaysAuthenticate, private, signable bool
	exponentRead                          error // C_GetAttributeValue(CKA_PRIVATE_EXPONENT)
}

// ockGenerate makes an RSA-2048 key pair on the token with the template
// of a key mp-hsm signs with (token object, private, sensitive, not
// extractable, can sign), optionally CKA_ALWAYS_AUTHENTICATE, and reads
// back what the token stored.
func ockGenerate(t *testing.T, p *pkcs11.Ctx, sh pkcs11.SessionHandle, label string, id []byte, alwaysAuth bool) ockKey {
	t.Helper()
	pubT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, 2048),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	privT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	if alwaysAuth {
		privT = append(privT, pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_AUTHENTICATE, true))
	}
	pubH, privH, err := p.GenerateKeyPair(sh,
		[]*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}, pubT, privT)
	if err != nil {
		t.Fatalf("C_GenerateKeyPair %s: %v", label, err)
	}
	pa, err := p.GetAttributeValue(sh, pubH, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil), pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil)})
	if err != nil {
		t.Fatal(err)
	}
	k := ockKey{pub: &rsa.PublicKey{N: new(big.Int).SetBytes(pa[0].Value), E: int(new(big.Int).SetBytes(pa[1].Value).Int64())}}
	flags := []struct {
		ty uint
		v  *bool
	}{
		{pkcs11.CKA_SENSITIVE, &k.sensitive}, {pkcs11.CKA_EXTRACTABLE, &k.extractable},
		{pkcs11.CKA_ALWAYS_SENSITIVE, &k.alwaysSensitive}, {pkcs11.CKA_NEVER_EXTRACTABLE, &k.neverExtractable},
		{pkcs11.CKA_ALWAYS_AUTHENTICATE, &k.alwaysAuthenticate}, {pkcs11.CKA_PRIVATE, &k.private},
		{pkcs11.CKA_SIGN, &k.signable},
	}
	for _, f := range flags {
		a, err := p.GetAttributeValue(sh, privH, []*pkcs11.Attribute{pkcs11.NewAttribute(f.ty, nil)})
		if err != nil {
			t.Fatalf("%s: reading attribute %#x: %v", label, f.ty, err)
		}
		*f.v = len(a[0].Value) > 0 && a[0].Value[0] != 0
	}
	_, k.exponentRead = p.GetAttributeValue(sh, privH, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_PRIVATE_EXPONENT, nil)})
	return k
}

// TestOpenCryptoki provisions the soft token (two RSA-2048 keys, one with
// CKA_ALWAYS_AUTHENTICATE, and a certificate), then uses it through the
// project's own packages: listing, login, RS256 and PS256 with the chain,
// the always-authenticate key, and the PIN counters against Login's
// lockout guard. The subtests run in order on one token.
func TestOpenCryptoki(t *testing.T) {
	ockNeed(t)
	r, err := StartOpenCryptoki(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	})
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("provision", func(t *testing.T) {
		ockSession(t, r, func(p *pkcs11.Ctx, _ uint, sh pkcs11.SessionHandle) {
			if err := p.Login(sh, pkcs11.CKU_USER, r.PIN); err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				label string
				id    byte
				aa    bool
			}{{"ock-rsa", 1, false}, {"ock-always-auth", 2, true}} {
				k := ockGenerate(t, p, sh, tc.label, []byte{tc.id}, tc.aa)
				if k.pub.N.BitLen() != 2048 || k.pub.E != 65537 {
					t.Errorf("%s: public key of %d bits, e=%d", tc.label, k.pub.N.BitLen(), k.pub.E)
				}
				// What opencryptoki stores is what the template asked.
				if !k.sensitive || k.extractable || !k.alwaysSensitive || !k.neverExtractable || !k.private || !k.signable {
					t.Errorf("%s: stored %+v, want sensitive, not extractable, always sensitive, never extractable, private, sign", tc.label, k)
				}
				if k.alwaysAuthenticate != tc.aa {
					t.Errorf("%s: CKA_ALWAYS_AUTHENTICATE = %v, want %v", tc.label, k.alwaysAuthenticate, tc.aa)
				}
				if !errors.Is(k.exponentRead, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
					t.Errorf("%s: reading CKA_PRIVATE_EXPONENT: %v, want CKR_ATTRIBUTE_SENSITIVE", tc.label, k.exponentRead)
				}
			}
		})
		// The certificate of the first key, written by hsm as mp-hsm's
		// admin commands write one.
		mod, err := hsm.Open(r.Module)
		if err != nil {
			t.Fatal(err)
		}
		defer mod.Close()
		slot, err := mod.FindSlot(hsm.TokenSelector{Label: r.Label})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := mod.OpenSlot(slot, hsm.TokenOptions{ReadWrite: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := tok.Login(hsm.StaticPIN([]byte(r.PIN)), hsm.LoginOptions{}); err != nil {
			t.Fatal(err)
		}
		key, err := tok.FindKey(hsm.KeySelector{Label: "ock-rsa"})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := ca.IssueLeaf(key.Public(), softhsm.LeafOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := tok.WriteCertificate(leaf, []byte{1}, "ock-rsa"); err != nil {
			t.Fatalf("storing the certificate: %v", err)
		}
		// No EC on opencryptoki: the error says the token cannot make
		// such keys, not that a signature algorithm is unsupported.
		_, err = tok.GenerateKey(hsm.GenerateOptions{Label: "ock-ec", Spec: hsm.KeySpecs["ec:p256"]})
		if !errors.Is(err, tokenerr.ErrUnsupported) || !strings.Contains(fmt.Sprint(err), "cannot generate ec:p256 keys (CKM_EC_KEY_PAIR_GEN") {
			t.Errorf("generating an EC key on opencryptoki: %v, want ErrUnsupported saying the token cannot generate ec:p256 keys", err)
		}
	})

	t.Run("list", func(t *testing.T) {
		mod, err := hsm.Open(r.Module)
		if err != nil {
			t.Fatal(err)
		}
		defer mod.Close()
		slots, err := mod.Slots()
		if err != nil {
			t.Fatal(err)
		}
		var found []string
		for _, s := range slots {
			found = append(found, s.String())
			if s.Token == nil || s.Token.Label != r.Label || s.Token.Serial != r.Serial {
				continue
			}
			// opencryptoki reports a session limit of 2^64-2: no limit
			// that should keep hsm from signing in parallel.
			tok, err := mod.OpenSlot(s, hsm.TokenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := tok.MaxSessions(), 2*runtime.GOMAXPROCS(0); got != want {
				t.Errorf("the token reports a session limit of %d; hsm signs on %d sessions at once, want %d",
					s.Token.MaxSessions, got, want)
			}
			return
		}
		t.Errorf("no token %q serial %q among %q", r.Label, r.Serial, found)
	})

	t.Run("sign", func(t *testing.T) {
		s, err := p11.Open(p11.Config{
			Module: r.Module,
			Token:  hsm.TokenSelector{Label: r.Label, Serial: r.Serial},
			Key:    hsm.KeySelector{Label: "ock-rsa"},
			PIN:    hsm.StaticPIN([]byte(r.PIN)),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if len(s.Chain()) == 0 || !s.Chain()[0].PublicKey.(*rsa.PublicKey).Equal(s.Public()) {
			t.Fatalf("the chain read from the token does not begin with the key's certificate: %d certificates", len(s.Chain()))
		}
		for _, m := range []*signer.SigningMethod{signer.RS256, signer.PS256} {
			sig, err := m.Sign("header.payload", s)
			if err != nil {
				t.Fatalf("%s: %v", m.Alg(), err)
			}
			if err := m.Verify("header.payload", sig, s.Public()); err != nil {
				t.Errorf("%s: the signature does not verify: %v", m.Alg(), err)
			}
		}
	})

	t.Run("always-authenticate", func(t *testing.T) {
		// Through pkcs11-spy, to count the logins.
		spy := p11spy.Path(t)
		log := filepath.Join(t.TempDir(), "spy.log")
		for _, kv := range p11spy.Env(r.Module, log) {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		var debug bytes.Buffer
		s, err := p11.Open(p11.Config{
			Module: spy,
			Token:  hsm.TokenSelector{Label: r.Label},
			Key:    hsm.KeySelector{Label: "ock-always-auth"},
			PIN:    hsm.StaticPIN([]byte(r.PIN)),
			Logger: slog.New(slog.NewTextHandler(&debug, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		const n = 3
		for range n {
			sig, err := signer.RS256.Sign("header.payload", s)
			if err != nil {
				t.Fatalf("the always-authenticate key does not sign: %v", err)
			}
			if err := signer.RS256.Verify("header.payload", sig, s.Public()); err != nil {
				t.Fatal(err)
			}
		}
		// One user login, and one context login, refused with
		// CKR_USER_TYPE_INVALID and never tried again.
		var user, context int
		for _, c := range p11spy.Read(t, log) {
			if c.Name != "C_Login" {
				continue
			}
			switch {
			case strings.Contains(c.Text, "CKU_CONTEXT_SPECIFIC"):
				context++
				if !strings.Contains(c.Text, "CKR_USER_TYPE_INVALID") {
					t.Errorf("the context login was not refused with CKR_USER_TYPE_INVALID:\n%s", c.Text)
				}
			default:
				user++
			}
		}
		if user != 1 || context != 1 {
			t.Errorf("C_Login: %d user, %d context-specific; want 1 and 1", user, context)
		}
		if got := strings.Count(debug.String(), "CKR_USER_TYPE_INVALID"); got != 1 {
			t.Errorf("the debug log says %d times that the context login was refused, want once:\n%s", got, debug.String())
		}
	})

	t.Run("wrong PIN", func(t *testing.T) {
		ockWrongPIN(t, r)
	})
}

// ockPINFlags are the user PIN's counter flags.
const ockPINFlags = pkcs11.CKF_USER_PIN_COUNT_LOW | pkcs11.CKF_USER_PIN_FINAL_TRY | pkcs11.CKF_USER_PIN_LOCKED

// ockWrongPIN presents wrong PINs through hsm's Login, with pkcs11-spy
// counting the C_Login calls: each wrong PIN costs exactly one, the flags
// in the error are those the token then reports (opencryptoki counts
// for real: count-low, final try, locked), and Login refuses without
// presenting the PIN on the final try (unless allowed) and once locked.
// Then the SO, with r.SOPIN, unlocks the user PIN (C_InitPIN), and hsm
// logs in again.
func ockWrongPIN(t *testing.T, r *Running) {
	spy := p11spy.Path(t)
	log := filepath.Join(t.TempDir(), "spy.log")
	for _, kv := range p11spy.Env(r.Module, log) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	logins := func() int { return p11spy.Counts(p11spy.Read(t, log))["C_Login"] }
	var mod *hsm.Module
	var tok *hsm.Token
	open := func() {
		var err error
		if mod, err = hsm.Open(spy); err != nil {
			t.Fatal(err)
		}
		slot, err := mod.FindSlot(hsm.TokenSelector{Label: r.Label})
		if err != nil {
			t.Fatal(err)
		}
		if tok, err = mod.OpenSlot(slot, hsm.TokenOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	open()
	defer func() { mod.Close() }()
	wrong, right := hsm.StaticPIN([]byte("wrong-pn")), hsm.StaticPIN([]byte(r.PIN))
	final := hsm.LoginOptions{AllowFinalTry: true}
	for i, step := range []struct {
		what      string
		pin       hsm.PINSource
		opts      hsm.LoginOptions
		kind      error // nil: logged in
		attempted bool
		flags     uint // the user PIN flags after
		reopen    bool // close the module (logging out) before the step
	}{
		{"1st wrong PIN", wrong, hsm.LoginOptions{}, tokenerr.ErrPINIncorrect, true, pkcs11.CKF_USER_PIN_COUNT_LOW, false},
		{"2nd wrong PIN", wrong, hsm.LoginOptions{}, tokenerr.ErrPINIncorrect, true, pkcs11.CKF_USER_PIN_FINAL_TRY, false},
		{"right PIN on the final try, not allowed", right, hsm.LoginOptions{}, tokenerr.ErrPINFinalTry, false, pkcs11.CKF_USER_PIN_FINAL_TRY, false},
		{"right PIN on the final try, allowed", right, final, nil, true, 0, false},
		{"1st wrong PIN again", wrong, hsm.LoginOptions{}, tokenerr.ErrPINIncorrect, true, pkcs11.CKF_USER_PIN_COUNT_LOW, true},
		{"2nd wrong PIN again", wrong, hsm.LoginOptions{}, tokenerr.ErrPINIncorrect, true, pkcs11.CKF_USER_PIN_FINAL_TRY, false},
		{"3rd wrong PIN, final try allowed", wrong, final, tokenerr.ErrPINLocked, true, pkcs11.CKF_USER_PIN_LOCKED, false},
		{"right PIN when locked", right, final, tokenerr.ErrPINLocked, false, pkcs11.CKF_USER_PIN_LOCKED, false},
	} {
		if step.reopen {
			if err := mod.Close(); err != nil {
				t.Fatal(err)
			}
			open()
		}
		before := logins()
		err := tok.Login(step.pin, step.opts)
		if got := logins() - before; got != map[bool]int{true: 1, false: 0}[step.attempted] {
			t.Errorf("step %d (%s): %d C_Login calls", i+1, step.what, got)
		}
		info, ierr := tok.Info()
		if ierr != nil {
			t.Fatal(ierr)
		}
		if got := uint(info.Flags) & ockPINFlags; got != step.flags {
			t.Errorf("step %d (%s): the token reports %s", i+1, step.what, info.Flags)
		}
		if step.kind == nil {
			if err != nil {
				t.Errorf("step %d (%s): %v", i+1, step.what, err)
			}
			continue
		}
		var pe *hsm.PINError
		if !errors.As(err, &pe) || !errors.Is(err, step.kind) || pe.Attempted != step.attempted {
			t.Errorf("step %d (%s): got %v (%#v), want %v, attempted %v", i+1, step.what, err, pe, step.kind, step.attempted)
			continue
		}
		if uint(pe.Flags)&ockPINFlags != uint(info.Flags)&ockPINFlags {
			t.Errorf("step %d (%s): the error says %s, the token %s", i+1, step.what, pe.Flags, info.Flags)
		}
		if strings.Contains(err.Error(), r.PIN) || strings.Contains(err.Error(), "wrong-pn") {
			t.Errorf("step %d: the error shows the PIN: %v", i+1, err)
		}
	}
	if err := mod.Close(); err != nil {
		t.Fatal(err)
	}
	ockSession(t, r, func(p *pkcs11.Ctx, _ uint, sh pkcs11.SessionHandle) {
		if err := p.Login(sh, pkcs11.CKU_SO, r.SOPIN); err != nil {
			t.Fatalf("SO login: %v", err)
		}
		if err := p.InitPIN(sh, r.PIN); err != nil {
			t.Fatalf("C_InitPIN: %v", err)
		}
	})
	open()
	if err := tok.Login(right, hsm.LoginOptions{}); err != nil {
		t.Fatalf("login after the SO unlocked the PIN: %v", err)
	}
	if info, err := tok.Info(); err != nil || uint(info.Flags)&ockPINFlags != 0 {
		t.Errorf("after the SO unlocked the PIN, the token reports %s (%v)", info.Flags, err)
	}
}

// ockHelperEnv names the directory in which TestOpenCryptokiHelperProcess,
// run as a child of TestOpenCryptokiKilledHolder, starts the backend.
const ockHelperEnv = "MP_HSM_OCK_HELPER_DIR"

// TestOpenCryptokiHelperProcess is not a test: run by
// TestOpenCryptokiKilledHolder as a child (with ockHelperEnv set), it
// starts the backend, logs in with hsm, prints the pid of its pkcsslotd
// and waits to be killed. Without ockHelperEnv it does nothing.
func TestOpenCryptokiHelperProcess(t *testing.T) {
	dir := os.Getenv(ockHelperEnv)
	if dir == "" {
		return
	}
	r, err := StartOpenCryptoki(dir)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := hsm.Open(r.Module)
	if err != nil {
		t.Fatal(err)
	}
	slot, err := mod.FindSlot(hsm.TokenSelector{Label: r.Label})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := mod.OpenSlot(slot, hsm.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(hsm.StaticPIN([]byte(r.PIN)), hsm.LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ready pid %d\n", ockRecorded(t))
	time.Sleep(time.Minute) // the parent kills this process long before
}

// TestOpenCryptokiKilledHolder proves that a test killed while it held the
// soft token (no Stop ran; its pkcsslotd and opencryptoki session were
// left behind) does not block the next Start: the lock died with the
// process, and Start ends the pkcsslotd the lock file names and starts its
// own.
func TestOpenCryptokiKilledHolder(t *testing.T) {
	ockNeed(t)
	ockNoDaemon(t)
	dir := t.TempDir()
	cmd := testexec.Command(t, time.Minute, os.Args[0], "-test.run=^TestOpenCryptokiHelperProcess$", "-test.v")
	cmd.Env = testexec.Env(dir, ockHelperEnv+"="+dir)
	p := testexec.Start(t, cmd)
	var stale int
	for stale == 0 {
		select {
		case <-p.Done():
			t.Fatalf("the helper exited: %s", p.Wait())
		case <-time.After(20 * time.Millisecond):
		}
		out, _ := p.Output()
		if _, after, ok := strings.Cut(out, "ready pid "); ok && strings.HasSuffix(after, "\n") {
			var err error
			if stale, err = strconv.Atoi(strings.TrimSpace(after)); err != nil || stale == 0 {
				t.Fatalf("the helper printed %q", out)
			}
		}
	}
	if err := p.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if !ockAlive(stale) {
		t.Fatalf("the killed helper's pkcsslotd %d is gone already: nothing to prove", stale)
	}
	r, err := StartOpenCryptoki(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	}()
	if ockAlive(stale) {
		t.Errorf("Start left the killed test's pkcsslotd %d running", stale)
	}
	if pid := ockRecorded(t); pid == 0 || pid == stale || !ockAlive(pid) {
		t.Errorf("after Start the lock file names pid %d (alive %v), the stale one was %d", pid, ockAlive(pid), stale)
	}
	if ti := ockTokenInfo(t, r); strings.TrimSpace(ti.Label) != ockLabel {
		t.Errorf("token label %q", ti.Label)
	}
}

// TestOpenCryptokiForeignDaemon proves that Start uses a pkcsslotd it did
// not start (the system's service) and that Stop leaves it running.
func TestOpenCryptokiForeignDaemon(t *testing.T) {
	ockNeed(t)
	ockNoDaemon(t)
	if os.Geteuid() != 0 {
		t.Skip("only root can start pkcsslotd")
	}
	pid := ockForeignDaemon(t)
	r, err := StartOpenCryptoki(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := ockRecorded(t); got != 0 {
		t.Errorf("the lock file names pid %d, but Start started no pkcsslotd", got)
	}
	if ti := ockTokenInfo(t, r); strings.TrimSpace(ti.Label) != ockLabel {
		t.Errorf("token label %q", ti.Label)
	}
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if !ockAlive(pid) {
		t.Errorf("Stop ended pkcsslotd %d, which it did not start", pid)
	}
}

// ockForeignDaemon starts a pkcsslotd as the system would, not recorded
// in the lock file, and ends it when the test ends. Both happen under the
// lock: a second pkcsslotd started beside a running one takes over its
// shared memory, and the first one's exit then destroys it, breaking the
// process that was using it.
func ockForeignDaemon(t *testing.T) int {
	t.Helper()
	lock, err := ockLock()
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if pids := ockDaemons(); len(pids) > 0 {
		t.Fatalf("pkcsslotd %v runs already", pids)
	}
	_ = os.Remove(ockPIDFile)
	res := testexec.Run(t, testexec.Command(t, 30*time.Second, ockDaemon))
	if res.Code != 0 {
		t.Fatal(res)
	}
	var pid int
	for end := time.Now().Add(10 * time.Second); pid == 0 || !ockAlive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("pkcsslotd wrote no pid file %s", ockPIDFile)
		}
		b, _ := os.ReadFile(ockPIDFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	t.Cleanup(func() {
		lock, err := ockLock()
		if err != nil {
			t.Error(err)
			return
		}
		defer lock.Close()
		if err := ockKill(pid); err != nil {
			t.Error(err)
		}
	})
	return pid
}

// ockNoDaemon fails the test (under CI) or skips it when a pkcsslotd runs
// that no test of ours started: the test needs to start its own.
func ockNoDaemon(t *testing.T) {
	t.Helper()
	f, err := ockLock()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	daemons := ockDaemons()
	recorded, _ := io.ReadAll(f)
	for _, pid := range daemons {
		if strconv.Itoa(pid) == strings.TrimSpace(string(recorded)) {
			continue // a killed test's: Start ends it
		}
		msg := fmt.Sprintf("pkcsslotd %d runs, not started by these tests: stop it (systemctl stop pkcsslotd)", pid)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// BenchmarkOpenCryptokiStartStop measures what the conformance suite pays
// for the backend: StartOpenCryptoki (pkcsslotd, wipe, C_InitToken,
// PINs) and Stop.
func BenchmarkOpenCryptokiStartStop(b *testing.B) {
	if _, err := os.Stat(ockDaemon); err != nil {
		b.Skip("opencryptoki is not installed")
	}
	for range b.N {
		r, err := StartOpenCryptoki(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Stop(); err != nil {
			b.Fatal(err)
		}
	}
}
