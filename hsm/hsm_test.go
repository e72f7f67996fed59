//go:build cgo

package hsm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

func TestMain(m *testing.M) { os.Exit(softhsm.Main(m)) }

// open opens the module of tok and its token, logged in with pin.
func open(t testing.TB, tok *softhsm.Token, pin string) *hsm.Token {
	t.Helper()
	m, err := hsm.Open(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ht, err := m.OpenSlot(hsm.Slot{ID: tok.SlotID}, hsm.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ht.Close() })
	if pin != "" {
		if err := ht.Login(hsm.StaticPIN([]byte(pin)), hsm.LoginOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return ht
}

func TestOpenBadModule(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "not-a-module.so")
	if err := os.WriteFile(text, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		want       error
	}{
		{"missing", filepath.Join(dir, "missing.so"), tokenerr.ErrModuleNotFound},
		{"empty path", "", tokenerr.ErrModuleNotFound},
		{"text file", text, tokenerr.ErrNotModule},
		{"directory", dir, tokenerr.ErrNotModule},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := hsm.Open(tc.path)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open(%q) = %v, %v; want %v", tc.path, m, err, tc.want)
			}
			var he *hsm.Error
			if !errors.As(err, &he) || he.Detail == "" {
				t.Errorf("error %v: want an *hsm.Error that says what was wrong", err)
			}
		})
	}
}

func TestModuleSharedAndIdempotentClose(t *testing.T) {
	tok := softhsm.New(t)
	a, err := hsm.Open(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	b, err := hsm.Open(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := a.Slots(); !errors.Is(err, tokenerr.ErrClosed) {
		t.Fatalf("Slots after Close = %v, want ErrClosed", err)
	}
	// b still works: the module is shared.
	if _, err := b.FindSlot(hsm.TokenSelector{Label: tok.Label}); err != nil {
		t.Fatal(err)
	}
	b.Close()
}

func TestSlotsAndTokenSelection(t *testing.T) {
	tok := softhsm.New(t)
	other := softhsm.New(t)
	m, err := hsm.Open(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil || !strings.Contains(info.Manufacturer+info.Description, "SoftHSM") {
		t.Errorf("Info() = %+v, %v; want SoftHSM", info, err)
	}
	slots, err := m.Slots()
	if err != nil {
		t.Fatal(err)
	}
	var seen *hsm.Slot
	for i, s := range slots {
		if s.Token != nil && s.Token.Label == tok.Label {
			seen = &slots[i]
		}
	}
	if seen == nil {
		t.Fatalf("Slots() does not list token %q: %v", tok.Label, slots)
	}
	if seen.ID != tok.SlotID || seen.Token.Serial != tok.Serial || !seen.Token.Flags.LoginRequired() ||
		seen.Token.Manufacturer == "" || seen.Token.Model == "" {
		t.Errorf("slot = %+v token %+v; want slot %d serial %s, login required, manufacturer and model", *seen, *seen.Token, tok.SlotID, tok.Serial)
	}

	slotID := tok.SlotID
	bogus := uint(0xfffffff0)
	for _, tc := range []struct {
		name string
		sel  hsm.TokenSelector
		want error // nil: finds tok
	}{
		{"slot", hsm.TokenSelector{SlotID: &slotID}, nil},
		{"label", hsm.TokenSelector{Label: tok.Label}, nil},
		{"serial", hsm.TokenSelector{Serial: tok.Serial}, nil},
		{"label and serial", hsm.TokenSelector{Label: tok.Label, Serial: tok.Serial}, nil},
		{"label of one, serial of other", hsm.TokenSelector{Label: tok.Label, Serial: other.Serial}, tokenerr.ErrTokenNotFound},
		{"unknown slot", hsm.TokenSelector{SlotID: &bogus}, tokenerr.ErrSlotNotFound},
		{"unknown label", hsm.TokenSelector{Label: "no such token"}, tokenerr.ErrTokenNotFound},
		{"several tokens, no choice", hsm.TokenSelector{}, tokenerr.ErrAmbiguousToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := m.FindSlot(tc.sel)
			if tc.want == nil {
				if err != nil || s.ID != tok.SlotID {
					t.Fatalf("FindSlot(%v) = %v, %v; want slot %d", tc.sel, s, err, tok.SlotID)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("FindSlot(%v) = %v, %v; want %v", tc.sel, s, err, tc.want)
			}
			var se *hsm.SelectionError
			if !errors.As(err, &se) || len(se.Candidates) == 0 {
				t.Fatalf("error %v: want a *SelectionError listing candidates", err)
			}
			if tc.want == tokenerr.ErrTokenNotFound && !strings.Contains(err.Error(), tok.Label) {
				t.Errorf("error %q does not list the existing token %q", err, tok.Label)
			}
		})
	}
}

// cardLike provisions a token shaped like a Buypass card: an authentication
// key (id 01), a signing key with CKA_ALWAYS_AUTHENTICATE (id 02), both with
// certificates, and the intermediate.
func cardLike(t testing.TB) (*softhsm.Token, *softhsm.CA) {
	t.Helper()
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{ID: []byte{1}, Label: "Authentication"}, softhsm.LeafOptions{})
	pub := tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{2}, Label: "Signing", AlwaysAuthenticate: true})
	leaf, err := ca.IssueLeaf(pub, softhsm.LeafOptions{Usage: softhsm.Signing})
	if err != nil {
		t.Fatal(err)
	}
	tok.WriteCertificate(t, leaf, []byte{2}, "Signing")
	return tok, ca
}

func TestKeysCertificatesAndKeySelection(t *testing.T) {
	tok, ca := cardLike(t)
	ht := open(t, tok, tok.PIN)

	certs, err := ht.Certificates()
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 3 {
		t.Fatalf("Certificates() = %d certificates, want 3 (two leaves, one intermediate)", len(certs))
	}
	keys, err := ht.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("Keys() = %v, want 2", keys)
	}
	for _, k := range keys {
		if k.Type != hsm.KeyTypeRSA || k.Bits != 2048 || !k.CanSign || k.Certificate == nil || k.Public == nil {
			t.Errorf("key %v: want a 2048-bit RSA signing key with public key and certificate", k)
		}
		if want := k.Label == "Signing"; k.AlwaysAuthenticate != want {
			t.Errorf("key %v: AlwaysAuthenticate = %v, want %v", k, k.AlwaysAuthenticate, want)
		}
		if want := k.Label == "Authentication"; k.Authentication() != want {
			t.Errorf("key %v: Authentication() = %v, want %v", k, k.Authentication(), want)
		}
	}
	_ = ca

	for _, tc := range []struct {
		name      string
		sel       hsm.KeySelector
		wantLabel string
		wantErr   error
	}{
		{"default is the authentication key", hsm.KeySelector{}, "Authentication", nil},
		{"by id", hsm.KeySelector{ID: []byte{2}}, "Signing", nil},
		{"by label", hsm.KeySelector{Label: "Signing"}, "Signing", nil},
		{"by id and label", hsm.KeySelector{ID: []byte{1}, Label: "Authentication"}, "Authentication", nil},
		{"id matches nothing", hsm.KeySelector{ID: []byte{9}}, "", tokenerr.ErrKeyNotFound},
		{"label matches nothing", hsm.KeySelector{Label: "nope"}, "", tokenerr.ErrKeyNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ht.FindKey(tc.sel)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("FindKey(%v) = %v, %v; want %v", tc.sel, k, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), `"Authentication"`) || !strings.Contains(err.Error(), `"Signing"`) {
					t.Errorf("error %q should list the keys that exist", err)
				}
				return
			}
			if err != nil || k.Info().Label != tc.wantLabel {
				t.Fatalf("FindKey(%v) = %v, %v; want %q", tc.sel, k, err, tc.wantLabel)
			}
		})
	}
}

func TestAmbiguousKeys(t *testing.T) {
	tok := softhsm.New(t)
	tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}, Label: "same"})
	tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{2}, Label: "same"})
	ht := open(t, tok, tok.PIN)
	for _, sel := range []hsm.KeySelector{{}, {Label: "same"}} {
		_, err := ht.FindKey(sel)
		var se *hsm.SelectionError
		if !errors.Is(err, tokenerr.ErrAmbiguousKey) || !errors.As(err, &se) || len(se.Candidates) != 2 {
			t.Fatalf("FindKey(%v) = %v; want ErrAmbiguousKey listing both keys", sel, err)
		}
		if !strings.Contains(err.Error(), "id 01") || !strings.Contains(err.Error(), "id 02") {
			t.Errorf("error %q should name both ids", err)
		}
	}
	k, err := ht.FindKey(hsm.KeySelector{ID: []byte{2}})
	if err != nil || !bytes.Equal(k.Info().ID, []byte{2}) {
		t.Fatalf("FindKey(id 02) = %v, %v", k, err)
	}
}

func TestKeyWithoutSign(t *testing.T) {
	tok := softhsm.New(t)
	tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}, Label: "decrypt-only", NoSign: true})
	ht := open(t, tok, tok.PIN)
	if _, err := ht.FindKey(hsm.KeySelector{}); !errors.Is(err, tokenerr.ErrKeyNotFound) {
		t.Errorf("default key with no signing key = %v, want ErrKeyNotFound", err)
	}
	if _, err := ht.FindKey(hsm.KeySelector{ID: []byte{1}}); !errors.Is(err, tokenerr.ErrKeyCannotSign) {
		t.Errorf("FindKey(decrypt-only) = %v, want ErrKeyCannotSign", err)
	}
}

func digest(h crypto.Hash, msg []byte) []byte {
	switch h {
	case crypto.SHA256:
		d := sha256.Sum256(msg)
		return d[:]
	case crypto.SHA384:
		d := sha512.Sum384(msg)
		return d[:]
	case crypto.SHA512:
		d := sha512.Sum512(msg)
		return d[:]
	}
	panic("unexpected hash")
}

func TestSignVerifiedByStandardLibrary(t *testing.T) {
	tok := softhsm.New(t)
	tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}})
	tok.GenerateEC(t, elliptic.P256(), softhsm.KeyOptions{ID: []byte{2}})
	tok.GenerateEC(t, elliptic.P384(), softhsm.KeyOptions{ID: []byte{3}})
	ht := open(t, tok, tok.PIN)
	msg := []byte("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ0ZXN0In0")

	rsaKey, err := ht.FindKey(hsm.KeySelector{ID: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	pub := rsaKey.Public().(*rsa.PublicKey)
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		d := digest(h, msg)
		sig, err := rsaKey.Sign(nil, d, h)
		if err != nil {
			t.Fatalf("PKCS1v15 %v: %v", h, err)
		}
		if err := rsa.VerifyPKCS1v15(pub, h, d, sig); err != nil {
			t.Errorf("PKCS1v15 %v does not verify: %v", h, err)
		}
		pss := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
		sig, err = rsaKey.Sign(nil, d, pss)
		if err != nil {
			t.Fatalf("PSS %v: %v", h, err)
		}
		if err := rsa.VerifyPSS(pub, h, d, sig, pss); err != nil {
			t.Errorf("PSS %v does not verify: %v", h, err)
		}
	}
	if _, err := rsaKey.Sign(nil, []byte("short"), crypto.SHA256); !errors.Is(err, tokenerr.ErrUnsupported) {
		t.Errorf("wrong digest length: %v, want ErrUnsupported", err)
	}

	for id, h := range map[byte]crypto.Hash{2: crypto.SHA256, 3: crypto.SHA384} {
		k, err := ht.FindKey(hsm.KeySelector{ID: []byte{id}})
		if err != nil {
			t.Fatal(err)
		}
		if k.Info().Type != hsm.KeyTypeEC {
			t.Fatalf("key %v: want EC", k)
		}
		d := digest(h, msg)
		sig, err := k.Sign(nil, d, h)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), d, sig) {
			t.Errorf("ECDSA %v signature does not verify", h)
		}
	}
}

func TestAlwaysAuthenticateKey(t *testing.T) {
	tok, _ := cardLike(t)
	ht := open(t, tok, tok.PIN)
	k, err := ht.FindKey(hsm.KeySelector{Label: "Signing"})
	if err != nil {
		t.Fatal(err)
	}
	if !k.Info().AlwaysAuthenticate {
		t.Fatal("the signing key should have CKA_ALWAYS_AUTHENTICATE")
	}
	d := digest(crypto.SHA256, []byte("grant"))
	for i := 0; i < 3; i++ { // each signature needs its own context login
		sig, err := k.Sign(nil, d, crypto.SHA256)
		if err != nil {
			t.Fatalf("signature %d: %v", i, err)
		}
		if err := rsa.VerifyPKCS1v15(k.Public().(*rsa.PublicKey), crypto.SHA256, d, sig); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWrongPINOneLoginOnly(t *testing.T) {
	spy := "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so"
	if _, err := os.Stat(spy); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("pkcs11-spy (opensc) is needed to count C_Login calls: %v", err)
		}
		t.Skip("pkcs11-spy.so (opensc) not installed")
	}
	tok := softhsm.New(t)
	log := filepath.Join(t.TempDir(), "spy.log")
	t.Setenv("PKCS11SPY", tok.Module)
	t.Setenv("PKCS11SPY_OUTPUT", log)
	m, err := hsm.Open(spy)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ht, err := m.OpenSlot(hsm.Slot{ID: tok.SlotID}, hsm.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ht.Close()
	err = ht.Login(hsm.StaticPIN([]byte("999999")), hsm.LoginOptions{})
	if !errors.Is(err, tokenerr.ErrPINIncorrect) || !errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)) {
		t.Fatalf("Login with a wrong PIN = %v, want ErrPINIncorrect", err)
	}
	if strings.Contains(err.Error(), "999999") {
		t.Fatalf("the error %q contains the PIN", err)
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "C_Login"); n != 1 {
		t.Fatalf("pkcs11-spy saw %d C_Login calls, want exactly 1", n)
	}
}

func TestPINRequired(t *testing.T) {
	tok := softhsm.New(t)
	ht := open(t, tok, "")
	if err := ht.Login(nil, hsm.LoginOptions{}); !errors.Is(err, tokenerr.ErrPINRequired) {
		t.Fatalf("Login(nil) on a token without PIN pad = %v, want ErrPINRequired", err)
	}
	if err := ht.Login(hsm.StaticPIN(nil), hsm.LoginOptions{}); !errors.Is(err, tokenerr.ErrPINRequired) {
		t.Fatalf("Login(empty PIN) = %v, want ErrPINRequired", err)
	}
	if ht.LoggedIn() {
		t.Fatal("LoggedIn after failed logins")
	}
}

func TestConcurrentSigning(t *testing.T) {
	tok := softhsm.New(t)
	tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}})
	ht := open(t, tok, tok.PIN)
	k, err := ht.FindKey(hsm.KeySelector{})
	if err != nil {
		t.Fatal(err)
	}
	pub := k.Public().(*rsa.PublicKey)
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			d := digest(crypto.SHA256, []byte{byte(i)})
			sig, err := k.SignContext(context.Background(), d, crypto.SHA256)
			if err == nil {
				err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, d, sig)
			}
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestUseAfterClose(t *testing.T) {
	tok := softhsm.New(t)
	tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}})
	ht := open(t, tok, tok.PIN)
	k, err := ht.FindKey(hsm.KeySelector{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ht.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ht.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := k.Sign(nil, digest(crypto.SHA256, nil), crypto.SHA256); !errors.Is(err, tokenerr.ErrClosed) {
		t.Fatalf("Sign after Close = %v, want ErrClosed", err)
	}
}

func TestSelectionByURI(t *testing.T) {
	tok, _ := cardLike(t)
	m, err := hsm.Open(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tc := range []struct {
		uri       string
		wantLabel string
		wantErr   error
	}{
		{"pkcs11:token=" + tok.Label + ";id=%02", "Signing", nil},
		{"pkcs11:serial=" + tok.Serial + ";object=Authentication;type=private", "Authentication", nil},
		{"pkcs11:token=" + tok.Label + ";type=cert", "Authentication", nil}, // no key named: the default
		{"pkcs11:token=" + tok.Label + ";id=%09", "", tokenerr.ErrKeyNotFound},
		{"pkcs11:token=no-such-token", "", tokenerr.ErrTokenNotFound},
		{"pkcs11:token=" + tok.Label + ";type=secret-key", "", pkcs11uri.ErrInvalid},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			u, err := pkcs11uri.Parse(tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			ts, ks, err := hsm.SelectorsFromURI(u)
			if err == nil {
				var slot hsm.Slot
				if slot, err = m.FindSlot(ts); err == nil {
					var ht *hsm.Token
					if ht, err = m.OpenSlot(hsm.Slot{ID: slot.ID}, hsm.TokenOptions{}); err == nil {
						defer ht.Close()
						if err = ht.Login(hsm.StaticPIN([]byte(tok.PIN)), hsm.LoginOptions{}); err == nil {
							var k *hsm.Key
							if k, err = ht.FindKey(ks); err == nil && k.Info().Label != tc.wantLabel {
								t.Fatalf("URI chose key %v, want %q", k, tc.wantLabel)
							}
						}
					}
				}
			}
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}
