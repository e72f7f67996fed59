//go:build cgo

package hsm_test

// Tests with internal/p11shim in front of SoftHSM2, loaded into this
// process: the module misbehaves as some real ones do (opencryptoki,
// tpm2-pkcs11). They set the shim's variables with t.Setenv, so they are
// not parallel.

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/p11shim"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// openShim opens tok through the shim set as o, logged in, with a debug
// log in the returned buffer, and returns the shim's count file.
func openShim(t *testing.T, tok *softhsm.Token, o p11shim.Options, opts hsm.TokenOptions) (*hsm.Token, *bytes.Buffer, string) {
	t.Helper()
	shim := p11shim.Build(t)
	o.Real = tok.Module
	o.CountFile = filepath.Join(t.TempDir(), "calls")
	o.Setenv(t)
	m, err := hsm.Open(shim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	var log bytes.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ht, err := m.OpenSlot(hsm.Slot{ID: tok.SlotID}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := ht.Login(hsm.StaticPIN([]byte(tok.PIN)), hsm.LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	return ht, &log, o.CountFile
}

const ckrUserTypeInvalid = 0x103

// TestContextLoginUserTypeInvalid is opencryptoki's case: the key says
// CKA_ALWAYS_AUTHENTICATE, the module answers C_Login(CKU_CONTEXT_SPECIFIC)
// with CKR_USER_TYPE_INVALID and signs without it. mp-hsm signs, tries the
// context login once over several signatures, and says so once at debug
// level.
func TestContextLoginUserTypeInvalid(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{ID: []byte{1}, Label: "Authentication"}, softhsm.LeafOptions{})
	tok, log, calls := openShim(t, st, p11shim.Options{ContextLoginRV: ckrUserTypeInvalid, AlwaysAuthenticate: true}, hsm.TokenOptions{})
	key, err := tok.FindKey(hsm.KeySelector{})
	if err != nil {
		t.Fatal(err)
	}
	if !key.Info().AlwaysAuthenticate {
		t.Fatalf("the shim should make the key say CKA_ALWAYS_AUTHENTICATE: %v", key)
	}
	for i := range 3 {
		d := digest(crypto.SHA256, []byte{byte(i)})
		sig, err := key.Sign(nil, d, crypto.SHA256)
		if err != nil {
			t.Fatalf("signature %d: %v", i, err)
		}
		if err := rsa.VerifyPKCS1v15(key.Public().(*rsa.PublicKey), crypto.SHA256, d, sig); err != nil {
			t.Fatalf("signature %d does not verify: %v", i, err)
		}
	}
	if n := p11shim.Count(t, calls, "C_Login(CKU_CONTEXT_SPECIFIC)"); n != 1 {
		t.Errorf("%d context logins over 3 signatures, want exactly 1", n)
	}
	if n := strings.Count(log.String(), "CKR_USER_TYPE_INVALID"); n != 1 || !strings.Contains(log.String(), "level=DEBUG") {
		t.Errorf("want one debug line about CKR_USER_TYPE_INVALID, got %d:\n%s", n, log)
	}
	if strings.Contains(log.String(), st.PIN) {
		t.Errorf("the PIN is in the log:\n%s", log)
	}
}

// TestContextLoginUserTypeInvalidEnforced: a module that refuses the
// context login with CKR_USER_TYPE_INVALID but enforces the attribute
// (SoftHSM2 behind the shim, with a real always-authenticate key) fails
// each signature with what C_Sign said, and C_Login is still attempted only
// once.
func TestContextLoginUserTypeInvalidEnforced(t *testing.T) {
	st := softhsm.New(t)
	st.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{2}, Label: "Signing", AlwaysAuthenticate: true})
	tok, _, calls := openShim(t, st, p11shim.Options{ContextLoginRV: ckrUserTypeInvalid}, hsm.TokenOptions{})
	key, err := tok.FindKey(hsm.KeySelector{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		_, err := key.Sign(nil, digest(crypto.SHA256, []byte{byte(i)}), crypto.SHA256)
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)) {
			t.Errorf("signature %d: %v, want C_Sign's CKR_USER_NOT_LOGGED_IN", i, err)
		}
	}
	if n := p11shim.Count(t, calls, "C_Login(CKU_CONTEXT_SPECIFIC)"); n != 1 {
		t.Errorf("%d context logins over 2 signatures, want exactly 1", n)
	}
}

// TestFailedSignatureReplacesSession is tpm2-pkcs11's case: C_Sign fails
// (CKR_FUNCTION_FAILED, which says nothing of the session) and leaves the
// signing operation active, so that the next C_SignInit on that session
// would meet CKR_OPERATION_ACTIVE. With one signing session, the signature
// after the failure must succeed, and no C_SignInit may meet an active
// operation.
func TestFailedSignatureReplacesSession(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{ID: []byte{1}, Label: "Authentication"}, softhsm.LeafOptions{})
	tok, _, calls := openShim(t, st, p11shim.Options{SignFailAfter: 1, SignFailures: 1, SignRV: pkcs11.CKR_FUNCTION_FAILED},
		hsm.TokenOptions{MaxSessions: 1})
	key, err := tok.FindKey(hsm.KeySelector{})
	if err != nil {
		t.Fatal(err)
	}
	d := digest(crypto.SHA256, []byte("grant"))
	if _, err := key.Sign(nil, d, crypto.SHA256); err != nil {
		t.Fatalf("first signature: %v", err)
	}
	if _, err := key.Sign(nil, d, crypto.SHA256); !errors.Is(err, pkcs11.Error(pkcs11.CKR_FUNCTION_FAILED)) {
		t.Fatalf("second signature: %v, want the shim's CKR_FUNCTION_FAILED", err)
	}
	for i := range 2 {
		sig, err := key.Sign(nil, d, crypto.SHA256)
		if err != nil {
			t.Fatalf("signature %d after the failed one: %v", i+1, err)
		}
		if err := rsa.VerifyPKCS1v15(key.Public().(*rsa.PublicKey), crypto.SHA256, d, sig); err != nil {
			t.Fatal(err)
		}
	}
	if n := p11shim.Count(t, calls, "C_SignInit=CKR_OPERATION_ACTIVE"); n != 0 {
		t.Errorf("%d C_SignInit calls met an operation left active, want 0", n)
	}
}

// TestPSSParamsLiveUntilSign is tpm2-pkcs11 1.9's case: the module keeps
// the pointer to the CK_RSA_PKCS_PSS_PARAMS given to C_SignInit and reads
// them again in C_Sign. The shim compares them there with what C_SignInit
// saw; had they been freed after C_SignInit (as miekg/pkcs11 does with its
// copy), it would answer CKR_MECHANISM_INVALID.
func TestPSSParamsLiveUntilSign(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{ID: []byte{1}, Label: "Authentication"}, softhsm.LeafOptions{})
	tok, _, calls := openShim(t, st, p11shim.Options{CheckParams: true}, hsm.TokenOptions{MaxSessions: 2})
	key, err := tok.FindKey(hsm.KeySelector{})
	if err != nil {
		t.Fatal(err)
	}
	pss := &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}
	for i := range 5 {
		d := digest(crypto.SHA256, []byte{byte(i)})
		sig, err := key.Sign(nil, d, pss)
		if err != nil {
			t.Fatalf("PSS signature %d: %v", i, err)
		}
		if err := rsa.VerifyPSS(key.Public().(*rsa.PublicKey), crypto.SHA256, d, sig, pss); err != nil {
			t.Fatalf("PSS signature %d does not verify: %v", i, err)
		}
		// A PKCS #1 v1.5 signature between them: no parameters to keep.
		if _, err := key.Sign(nil, d, crypto.SHA256); err != nil {
			t.Fatalf("PKCS #1 v1.5 signature %d: %v", i, err)
		}
	}
	if n := p11shim.Count(t, calls, "C_Sign=parameters changed"); n != 0 {
		t.Errorf("%d C_Sign calls found the PSS parameters changed since C_SignInit, want 0", n)
	}
}
