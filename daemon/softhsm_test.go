//go:build cgo

package daemon_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// The daemon's tests on SoftHSM2, which needs cgo: the fixtures sign on a
// token (sharedOpener), and the PIN is refused by a real token. Without cgo
// the same fixtures sign with a key in memory (nocgo_test.go).

func TestMain(m *testing.M) { os.Exit(softhsm.Main(m)) }

// tokenWithKey returns a new SoftHSM2 token with an RSA key labelled label
// and its certificate from the test root (see issueLeaf).
func tokenWithKey(t testing.TB, label string) *softhsm.Token {
	t.Helper()
	tok := softhsm.New(t)
	id := []byte{1}
	leaf, err := issueLeaf(tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: id, Label: label}))
	if err != nil {
		t.Fatal(err)
	}
	tok.WriteCertificate(t, leaf, id, label)
	return tok
}

// sharedToken returns a SoftHSM2 token with a certified RSA key, made once.
// Tests that log in with a wrong PIN make their own.
var sharedTok struct {
	once sync.Once
	tok  *softhsm.Token
}

func sharedToken(t testing.TB) *softhsm.Token {
	t.Helper()
	sharedTok.once.Do(func() { sharedTok.tok = tokenWithKey(t, "daemon") })
	if sharedTok.tok == nil {
		t.Fatal("no shared SoftHSM2 token")
	}
	return sharedTok.tok
}

// signerConfig opens tok's key with its PIN.
func signerConfig(tok *softhsm.Token) p11.Config {
	return p11.Config{
		Module: tok.Module,
		Token:  hsm.TokenSelector{Serial: tok.Serial},
		PIN:    hsm.StaticPIN([]byte(tok.PIN)),
	}
}

// sharedOpener opens the key the fixtures sign with: with cgo, the key on
// the shared SoftHSM2 token, with a login each time.
func sharedOpener(t testing.TB) func(context.Context) (signer.Signer, error) {
	sc := signerConfig(sharedToken(t))
	return func(context.Context) (signer.Signer, error) { return p11.Open(sc) }
}

// TestTokenSignerProbe: the daemon probes a p11.TokenSigner through
// Prober, and a closed one reports a fault the daemon reconnects after.
func TestTokenSignerProbe(t *testing.T) {
	t.Parallel()
	s, err := p11.Open(signerConfig(sharedToken(t)))
	if err != nil {
		t.Fatal(err)
	}
	var p daemon.Prober = s
	if err := p.Probe(context.Background()); err != nil {
		t.Fatalf("Probe of an open token = %v", err)
	}
	s.Close()
	if err := p.Probe(context.Background()); !errors.Is(err, tokenerr.ErrClosed) {
		t.Fatalf("Probe after Close = %v, want tokenerr.ErrClosed", err)
	}
}

func TestWrongPINOneLogin(t *testing.T) {
	// Not parallel: pkcs11-spy is configured through the environment.
	tok := tokenWithKey(t, "pin")
	module := tok.Module
	spyLog := ""
	const spy = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so"
	if _, err := os.Stat(spy); err == nil {
		spyLog = filepath.Join(t.TempDir(), "spy.log")
		t.Setenv("PKCS11SPY", tok.Module)
		t.Setenv("PKCS11SPY_OUTPUT", spyLog)
		module = spy
	} else {
		t.Log("pkcs11-spy.so not installed: counting PIN reads only")
	}
	var pinReads, opens atomic.Int32
	wrong := func() ([]byte, error) { pinReads.Add(1); return []byte("999999"), nil }
	sc := p11.Config{Module: module, Token: hsm.TokenSelector{Serial: tok.Serial}, PIN: wrong}
	open := func(context.Context) (signer.Signer, error) {
		if opens.Add(1) == 1 { // the card is not inserted when the daemon starts
			return nil, &hsm.Error{Op: "C_GetTokenInfo", Kind: tokenerr.ErrNoToken}
		}
		return p11.Open(sc)
	}
	f := newFixture(t, options{noTCP: true, modify: func(c *daemon.Config) {
		c.OpenSigner = open
		c.ReconnectMin = 20 * time.Millisecond
		c.ReconnectMax = 40 * time.Millisecond
	}})
	waitFor(t, 5*time.Second, "the login to be refused", func() bool {
		_, body := f.get("/readyz")
		return strings.Contains(body, "PIN incorrect")
	})
	time.Sleep(300 * time.Millisecond) // many backoff periods: the loop must have stopped
	if n := pinReads.Load(); n != 1 {
		t.Fatalf("the PIN was presented %d times, want exactly 1", n)
	}
	if n := opens.Load(); n != 2 {
		t.Fatalf("OpenSigner was called %d times, want 2 (absent, then the wrong PIN)", n)
	}
	if spyLog != "" {
		data, err := os.ReadFile(spyLog)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(data), "C_Login"); n != 1 {
			t.Fatalf("pkcs11-spy saw %d C_Login calls, want exactly 1", n)
		}
	}
	a := f.post(scopeForm("test:read"))
	wantError(t, a, http.StatusServiceUnavailable, "temporarily_unavailable")
	if !strings.Contains(a.Description, "PIN incorrect") || strings.Contains(f.logs.String(), "999999") {
		t.Fatalf("503 %q: want the PIN reason; the log must not hold the PIN", a.Description)
	}
	// Reload with the right PIN: ready, without a restart.
	cfg := f.cfg
	right := signerConfig(tok)
	right.Module = module
	cfg.OpenSigner = func(context.Context) (signer.Signer, error) { return p11.Open(right) }
	if err := f.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if ok, reason := f.srv.Ready(); !ok {
		t.Fatalf("not ready after a reload with the right PIN: %s", reason)
	}
	wantToken(t, f.post(scopeForm("test:read")))
	if n := pinReads.Load(); n != 1 {
		t.Fatalf("the wrong PIN was presented again (%d times)", n)
	}
}

func TestNewFailsOnWrongPIN(t *testing.T) {
	t.Parallel()
	tok := tokenWithKey(t, "pin2")
	var reads atomic.Int32
	sc := signerConfig(tok)
	sc.PIN = func() ([]byte, error) { reads.Add(1); return []byte("000000"), nil }
	emu := newEmulator(t, 0)
	_, err := daemon.New(daemon.Config{
		OpenSigner: func(context.Context) (signer.Signer, error) { return p11.Open(sc) },
		Grant:      grant.Config{ClientID: testClient, Environment: environment(emu)},
	})
	if !errors.Is(err, tokenerr.ErrPINIncorrect) || reads.Load() != 1 {
		t.Fatalf("New with a wrong PIN = %v after %d PIN reads, want ErrPINIncorrect after 1", err, reads.Load())
	}
	if _, err := daemon.New(daemon.Config{Grant: grant.Config{ClientID: "x"}}); !errors.Is(err, daemon.ErrConfig) {
		t.Fatalf("New without OpenSigner = %v, want ErrConfig", err)
	}
}

// TestWaitOnPINRefused: with WaitOnPINRefused a PIN refused at start leaves
// the Server up and not ready, saying why, and the PIN is not read or
// presented again (no reconnect loop) until Reload, which logs in with
// the PIN source as it is then.
func TestWaitOnPINRefused(t *testing.T) {
	t.Parallel()
	tok := tokenWithKey(t, "pin3")
	var reads atomic.Int32
	var pin atomic.Value
	pin.Store("000000")
	sc := signerConfig(tok)
	sc.PIN = func() ([]byte, error) { reads.Add(1); return []byte(pin.Load().(string)), nil }
	emu := newEmulator(t, 0)
	cfg := daemon.Config{
		OpenSigner:       func(context.Context) (signer.Signer, error) { return p11.Open(sc) },
		Grant:            grant.Config{ClientID: testClient, Environment: environment(emu)},
		WaitOnPINRefused: true,
		ReconnectMin:     time.Millisecond,
		ReconnectMax:     time.Millisecond,
	}
	srv, err := daemon.New(cfg)
	if err != nil {
		t.Fatalf("New with a wrong PIN and WaitOnPINRefused = %v, want a Server", err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	ok, reason := srv.Ready()
	if ok || !strings.Contains(reason, "login refused") || !strings.Contains(reason, "CKR_PIN_INCORRECT") {
		t.Errorf("Ready = %v, %q; want not ready, the login refused", ok, reason)
	}
	time.Sleep(100 * time.Millisecond) // a hundred reconnect backoffs
	if n := reads.Load(); n != 1 {
		t.Errorf("%d PIN reads, want 1", n)
	}
	pin.Store(tok.PIN)
	if err := srv.Reload(cfg); err != nil {
		t.Fatalf("Reload with the right PIN: %v", err)
	}
	if ok, reason := srv.Ready(); !ok || reads.Load() != 2 {
		t.Errorf("after Reload: Ready = %v, %q after %d PIN reads; want ready after 2", ok, reason, reads.Load())
	}
}

// TestReloadAndReconnectLogInOneAtATime: while the reconnect loop polls
// for a token that is away, a Reload comes with a wrong PIN just as the
// token returns. The loop and the Reload must not both log in: one
// refusal tells, a second would spend another try.
func TestReloadAndReconnectLogInOneAtATime(t *testing.T) {
	t.Parallel()
	tok := tokenWithKey(t, "pin-race")
	var reads, inFlight, most atomic.Int32
	sc := signerConfig(tok)
	sc.PIN = func() ([]byte, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		if n > most.Load() {
			most.Store(n)
		}
		reads.Add(1)
		time.Sleep(20 * time.Millisecond) // a slow PIN pad or network HSM
		return []byte("000000"), nil
	}
	var away atomic.Bool
	away.Store(true)
	emu := newEmulator(t, 0)
	cfg := daemon.Config{
		OpenSigner: func(context.Context) (signer.Signer, error) {
			if away.Load() {
				return nil, tokenerr.ErrNoToken
			}
			return p11.Open(sc)
		},
		Grant:        grant.Config{ClientID: testClient, Environment: environment(emu)},
		PresencePoll: time.Millisecond,
		ReconnectMin: time.Millisecond,
		ReconnectMax: time.Millisecond,
	}
	srv, err := daemon.New(cfg)
	if err != nil {
		t.Fatalf("New with the token away = %v, want a Server that reconnects", err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	away.Store(false)
	if err := srv.Reload(cfg); !tokenerr.IsPINRefused(err) {
		t.Errorf("Reload with a wrong PIN = %v, want the PIN refused", err)
	}
	time.Sleep(100 * time.Millisecond) // a hundred polls
	if n, m := reads.Load(), most.Load(); n != 1 || m != 1 {
		t.Errorf("%d PIN reads, at most %d at once; want 1 and 1", n, m)
	}
	if ok, reason := srv.Ready(); ok || !strings.Contains(reason, "login refused") {
		t.Errorf("Ready = %v, %q; want not ready, the login refused", ok, reason)
	}
}
