//go:build cgo

package hsm_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// opened is a module, a logged-in token and a key on it, not yet closed.
type opened struct {
	st  *softhsm.Token
	m   *hsm.Module
	tok *hsm.Token
	key *hsm.Key
}

func openAll(t *testing.T, opts hsm.TokenOptions) opened {
	t.Helper()
	st := softhsm.New(t)
	st.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}, Label: "k"})
	m, err := hsm.Open(st.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	tok, err := m.OpenSlot(hsm.Slot{ID: st.SlotID}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(hsm.StaticPIN([]byte(st.PIN)), hsm.LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	key, err := tok.FindKey(hsm.KeySelector{})
	if err != nil {
		t.Fatal(err)
	}
	return opened{st: st, m: m, tok: tok, key: key}
}

type call struct {
	name string
	f    func() error
}

func moduleCalls(o opened) []call {
	return []call{
		{"Module.Info", func() error { _, err := o.m.Info(); return err }},
		{"Module.Slots", func() error { _, err := o.m.Slots(); return err }},
		{"Module.FindSlot", func() error { _, err := o.m.FindSlot(hsm.TokenSelector{Label: o.st.Label}); return err }},
		{"Module.OpenSlot", func() error {
			tok, err := o.m.OpenSlot(hsm.Slot{ID: o.st.SlotID}, hsm.TokenOptions{})
			if err == nil {
				tok.Close()
			}
			return err
		}},
	}
}

func tokenCalls(o opened) []call {
	d := digest(crypto.SHA256, []byte("grant"))
	return []call{
		{"Token.Info", func() error { _, err := o.tok.Info(); return err }},
		{"Token.Login", func() error { return o.tok.Login(hsm.StaticPIN([]byte(o.st.PIN)), hsm.LoginOptions{}) }},
		{"Token.Certificates", func() error { _, err := o.tok.Certificates(); return err }},
		{"Token.Keys", func() error { _, err := o.tok.Keys(); return err }},
		{"Token.FindKey", func() error { _, err := o.tok.FindKey(hsm.KeySelector{}); return err }},
		{"Key.Sign", func() error { _, err := o.key.Sign(nil, d, crypto.SHA256); return err }},
		{"Key.SignContext", func() error { _, err := o.key.SignContext(context.Background(), d, crypto.SHA256); return err }},
		{"Key.SignContext PSS", func() error {
			_, err := o.key.SignContext(context.Background(), d, &rsa.PSSOptions{Hash: crypto.SHA256})
			return err
		}},
	}
}

// noCrashAfterClose calls the methods that return no error: they must
// answer from what they hold, without reaching the module.
func noCrashAfterClose(t *testing.T, o opened) {
	t.Helper()
	_ = o.m.Path()
	_ = o.tok.MaxSessions()
	if o.tok.LoggedIn() {
		t.Error("LoggedIn() = true after Close")
	}
	if o.key.Public() == nil || o.key.Info().Label != "k" || o.key.String() == "" || o.key.Token() != o.tok {
		t.Errorf("Key accessors after Close: Public %v, Info %v, Token %p", o.key.Public(), o.key.Info(), o.key.Token())
	}
	if err := o.tok.Close(); err != nil {
		t.Errorf("Token.Close again: %v", err)
	}
	if err := o.m.Close(); err != nil {
		t.Errorf("Module.Close again: %v", err)
	}
}

// TestEveryMethodAfterModuleClose is the crash of the issue: Open,
// OpenSlot, Module.Close, then Token.Info() reached miekg/pkcs11 with a nil
// context (SIGSEGV). Every method of Module, Token and Key must now return
// ErrClosed.
func TestEveryMethodAfterModuleClose(t *testing.T) {
	o := openAll(t, hsm.TokenOptions{})
	if err := o.m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range append(moduleCalls(o), tokenCalls(o)...) {
		if err := c.f(); !errors.Is(err, tokenerr.ErrClosed) {
			t.Errorf("%s after Module.Close = %v, want ErrClosed", c.name, err)
		}
	}
	noCrashAfterClose(t, o)
}

// TestEveryMethodAfterTokenClose: the token and its keys are closed, the
// module is not.
func TestEveryMethodAfterTokenClose(t *testing.T) {
	o := openAll(t, hsm.TokenOptions{})
	if err := o.tok.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range tokenCalls(o) {
		if err := c.f(); !errors.Is(err, tokenerr.ErrClosed) {
			t.Errorf("%s after Token.Close = %v, want ErrClosed", c.name, err)
		}
	}
	for _, c := range moduleCalls(o) {
		if err := c.f(); err != nil {
			t.Errorf("%s after Token.Close = %v, want it to work: the module is open", c.name, err)
		}
	}
	noCrashAfterClose(t, o)
}

// TestModuleCloseLeavesOtherModulesAlone: two Modules share the loaded
// library; closing one closes its own tokens only.
func TestModuleCloseLeavesOtherModulesAlone(t *testing.T) {
	a := openAll(t, hsm.TokenOptions{})
	m2, err := hsm.Open(a.st.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	tok2, err := m2.OpenSlot(hsm.Slot{ID: a.st.SlotID}, hsm.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.tok.Info(); !errors.Is(err, tokenerr.ErrClosed) {
		t.Errorf("Info on a token of the closed module = %v, want ErrClosed", err)
	}
	if _, err := tok2.Info(); err != nil {
		t.Errorf("Info on a token of the other module = %v", err)
	}
	if err := tok2.Login(hsm.StaticPIN([]byte(a.st.PIN)), hsm.LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	k, err := tok2.FindKey(hsm.KeySelector{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Sign(nil, digest(crypto.SHA256, nil), crypto.SHA256); err != nil {
		t.Errorf("Sign on the other module: %v", err)
	}
}

// TestCloseDuringSignatures closes the module, or the token, while
// signatures, key listings and token reads run: each call must either
// succeed (and the signature verify) or return ErrClosed, and none may
// succeed after Close has returned. Run it with -race.
func TestCloseDuringSignatures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		max   int
		close func(o opened) error
	}{
		{"module", 0, func(o opened) error { return o.m.Close() }},
		{"token", 0, func(o opened) error { return o.tok.Close() }},
		{"module, one session for all", 1, func(o opened) error { return o.m.Close() }},
		{"token, one session for all", 1, func(o opened) error { return o.tok.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := openAll(t, hsm.TokenOptions{MaxSessions: tc.max})
			pub := o.key.Public().(*rsa.PublicKey)
			d := digest(crypto.SHA256, []byte("grant"))

			var closed atomic.Bool // set once Close has returned
			var signed atomic.Int32
			started := make(chan struct{})
			var startOnce sync.Once
			errs := make(chan error, 64)
			var wg sync.WaitGroup
			worker := func(f func() error) {
				defer wg.Done()
				for {
					after := closed.Load()
					err := f()
					if err == nil {
						if after {
							errs <- errors.New("a call succeeded after Close returned")
							return
						}
						if signed.Add(1) >= 8 {
							startOnce.Do(func() { close(started) })
						}
						continue
					}
					if !errors.Is(err, tokenerr.ErrClosed) {
						errs <- err
					}
					return
				}
			}
			for range 6 {
				wg.Add(1)
				go worker(func() error {
					sig, err := o.key.SignContext(context.Background(), d, crypto.SHA256)
					if err == nil {
						err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, d, sig)
					}
					return err
				})
			}
			wg.Add(2)
			go worker(func() error { _, err := o.tok.Keys(); return err })
			go worker(func() error { _, err := o.tok.Info(); return err })

			<-started
			if err := tc.close(o); err != nil {
				t.Errorf("Close: %v", err)
			}
			closed.Store(true)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
