//go:build cgo

package tokencheck_test

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/doctor/tokencheck"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/p11shim"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

func TestMain(m *testing.M) { os.Exit(softhsm.Main(m)) }

// setup makes a SoftHSM2 token with an authentication key and its test
// certificate, and an emulator that trusts the test PKI.
func setup(t *testing.T) (*softhsm.Token, *emulator.Server) {
	t.Helper()
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{Label: "Authentication"}, softhsm.LeafOptions{})
	return tok, emulator.NewTest(t, emulator.Config{Roots: []*x509.Certificate{ca.Root}})
}

// config is the p11.Config of tok, with pin (nil for none).
func config(tok *softhsm.Token, pin hsm.PINSource) p11.Config {
	return p11.Config{Module: tok.Module, Token: hsm.TokenSelector{Label: tok.Label}, PIN: pin}
}

// run runs the doctor with c as its key finder.
func run(t *testing.T, c doctor.KeyFinder, srv *emulator.Server) doctor.Results {
	t.Helper()
	return doctor.Run(context.Background(), doctor.Config{Key: c, WellKnown: srv.MetadataURL()})
}

// want fails t unless the result of check has status and, if given, holds
// words.
func want(t *testing.T, rs doctor.Results, check string, status doctor.Status, words string) doctor.Result {
	t.Helper()
	for _, r := range rs {
		if r.Check == check {
			if r.Status != status || !strings.Contains(r.Message, words) {
				t.Errorf("check %s: %s %q, want %s with %q", check, r.Status, r.Message, status, words)
			}
			return r
		}
	}
	t.Fatalf("no check %s in %+v", check, rs)
	return doctor.Result{}
}

func TestChecksAllGood(t *testing.T) {
	tok, srv := setup(t)
	rs := run(t, &tokencheck.Checks{Config: config(tok, hsm.StaticPIN([]byte(tok.PIN)))}, srv)
	names := []string{"module", "token", "pin", "login", "key", "signature", "certificate", "validity",
		"key-usage", "issuer", "org-number", "environment", "metadata", "clock", "token-request"}
	if len(rs) != len(names) {
		t.Fatalf("%d results, want %d: %+v", len(rs), len(names), rs)
	}
	for i, r := range rs {
		status := doctor.OK
		if r.Check == "token-request" {
			status = doctor.Skip // no client or scope
		}
		if r.Check != names[i] || r.Status != status {
			t.Errorf("result %d: %s %s %q, want %s %s", i, r.Check, r.Status, r.Message, names[i], status)
		}
	}
	want(t, rs, "module", doctor.OK, tok.Module)
	want(t, rs, "token", doctor.OK, tok.Label)
	want(t, rs, "key", doctor.OK, "chosen as the authentication key")
	want(t, rs, "certificate", doctor.OK, "holds the key; x5c carries a chain of 2")
}

func TestChecksWrongPIN(t *testing.T) {
	tok, srv := setup(t)
	const wrong = "999888"
	rs := run(t, &tokencheck.Checks{Config: config(tok, hsm.StaticPIN([]byte(wrong)))}, srv)
	r := want(t, rs, "login", doctor.Fail, "PIN incorrect")
	var pe *hsm.PINError
	if !errors.As(r.Err, &pe) || pe.Kind != tokenerr.ErrPINIncorrect || r.Class != doctor.ClassToken || r.Hint == "" {
		t.Errorf("login: class %d, err %v, hint %q; want a *hsm.PINError for an incorrect PIN", r.Class, r.Err, r.Hint)
	}
	want(t, rs, "key", doctor.Skip, "needs a login")
	// The certificate is found without a login and judged.
	want(t, rs, "certificate", doctor.Skip, "not compared with the key (no login)")
	want(t, rs, "validity", doctor.OK, "valid until")
	want(t, rs, "org-number", doctor.OK, softhsm.DefaultOrgNumber)
	for _, r := range rs {
		if strings.Contains(r.Message+r.Hint, wrong) {
			t.Errorf("check %s shows the PIN: %s", r.Check, r.Message)
		}
	}
}

// TestChecksPINLockedWithoutFlag: a module that answers CKR_PIN_LOCKED
// while its flags do not say so, as tpm2-pkcs11 does during the TPM's
// dictionary-attack lockout (here the shim in front of SoftHSM2), gets the
// TPM's remedy, not the PUK.
func TestChecksPINLockedWithoutFlag(t *testing.T) {
	tok, srv := setup(t)
	shim := p11shim.Build(t)
	p11shim.Options{Real: tok.Module, LoginRV: pkcs11.CKR_PIN_LOCKED}.Setenv(t)
	cfg := config(tok, hsm.StaticPIN([]byte("999888")))
	cfg.Module = shim
	rs := run(t, &tokencheck.Checks{Config: cfg}, srv)
	r := want(t, rs, "login", doctor.Fail, "dictionary-attack lockout")
	if !errors.Is(r.Err, tokenerr.ErrPINLocked) || strings.Contains(r.Hint, "PUK") || !strings.Contains(r.Hint, "tpm2_dictionarylockout") {
		t.Errorf("login: err %v, hint %q; want ErrPINLocked and the TPM's remedy", r.Err, r.Hint)
	}
}

func TestChecksNoPIN(t *testing.T) {
	tok, srv := setup(t)
	padCalled := false
	rs := run(t, &tokencheck.Checks{Config: config(tok, nil), OnPINPad: func() { padCalled = true }}, srv)
	want(t, rs, "pin", doctor.OK, "no PIN problems reported")
	want(t, rs, "login", doctor.Skip, "no PIN given")
	want(t, rs, "key", doctor.Skip, "needs a login")
	want(t, rs, "issuer", doctor.OK, "a test certificate")
	if padCalled {
		t.Error("OnPINPad called for a token without a PIN pad")
	}
	if f := rs.FirstFailure(); f != nil {
		t.Errorf("a check failed: %+v", f)
	}
}

func TestChecksExplain(t *testing.T) {
	tok, srv := setup(t)
	cfg := config(tok, hsm.StaticPIN([]byte(tok.PIN)))
	cfg.Key = hsm.KeySelector{Label: "no such key"}
	explained := false
	rs := run(t, &tokencheck.Checks{Config: cfg, Explain: func(err error) error {
		explained = true
		return errors.Join(err, errors.New("pick another"))
	}}, srv)
	r := want(t, rs, "key", doctor.Fail, "pick another")
	var se *hsm.SelectionError
	if !explained || !errors.As(r.Err, &se) || se.Kind != tokenerr.ErrKeyNotFound || r.Class != doctor.ClassToken {
		t.Errorf("key: explained %v, class %d, err %v; want the *hsm.SelectionError kept", explained, r.Class, r.Err)
	}
	want(t, rs, "signature", doctor.Skip, "needs the key")
}

func TestChecksNoModule(t *testing.T) {
	_, srv := setup(t)
	rs := run(t, &tokencheck.Checks{Config: p11.Config{Module: "/nonexistent/libpkcs11.so"}}, srv)
	r := want(t, rs, "module", doctor.Fail, "/nonexistent/libpkcs11.so")
	if r.Class != doctor.ClassToken || r.Hint != tokencheck.ModuleHint || r.Err == nil {
		t.Errorf("module: %+v", r)
	}
	for _, c := range []string{"token", "pin", "login", "key"} {
		want(t, rs, c, doctor.Skip, "needs the ")
	}
}

func TestFailed(t *testing.T) {
	_, srv := setup(t)
	bad := errors.New("--slot \"x\": want a number")
	rs := run(t, tokencheck.Failed(bad, "fix the flag"), srv)
	r := want(t, rs, "module", doctor.Fail, "--slot")
	if !errors.Is(r.Err, bad) || r.Class != doctor.ClassUsage || r.Hint != "fix the flag" {
		t.Errorf("module: %+v", r)
	}
	want(t, rs, "token", doctor.Skip, "needs the module")
	want(t, rs, "certificate", doctor.Skip, "needs the key")
}
