//go:build cgo

package softhsm_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

func TestMain(m *testing.M) { os.Exit(softhsm.Main(m)) }

// module opens the SoftHSM2 module in this process as code under test
// does: the harness has initialised it already, so C_Initialize must
// answer CKR_CRYPTOKI_ALREADY_INITIALIZED.
func module(t *testing.T, tok *softhsm.Token) *pkcs11.Ctx {
	t.Helper()
	ctx := pkcs11.New(tok.Module)
	if ctx == nil {
		t.Fatalf("cannot load %s", tok.Module)
	}
	t.Cleanup(ctx.Destroy)
	if err := ctx.Initialize(); !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		t.Fatalf("C_Initialize = %v, want CKR_CRYPTOKI_ALREADY_INITIALIZED", err)
	}
	return ctx
}

// login opens a session on the token and logs in as the user.
func login(t *testing.T, ctx *pkcs11.Ctx, tok *softhsm.Token) pkcs11.SessionHandle {
	t.Helper()
	sh, err := ctx.OpenSession(tok.SlotID, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatalf("C_OpenSession: %v", err)
	}
	t.Cleanup(func() { ctx.CloseSession(sh) })
	if err := ctx.Login(sh, pkcs11.CKU_USER, tok.PIN); err != nil {
		t.Fatalf("C_Login: %v", err)
	}
	t.Cleanup(func() { ctx.Logout(sh) })
	return sh
}

// findOne returns the one object of class with CKA_ID id.
func findOne(t *testing.T, ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, class uint, id []byte) pkcs11.ObjectHandle {
	t.Helper()
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	if err := ctx.FindObjectsInit(sh, tmpl); err != nil {
		t.Fatalf("C_FindObjectsInit: %v", err)
	}
	hs, _, err := ctx.FindObjects(sh, 10)
	if err != nil {
		t.Fatalf("C_FindObjects: %v", err)
	}
	if err := ctx.FindObjectsFinal(sh); err != nil {
		t.Fatalf("C_FindObjectsFinal: %v", err)
	}
	if len(hs) != 1 {
		t.Fatalf("found %d objects of class %d with CKA_ID %x, want 1", len(hs), class, id)
	}
	return hs[0]
}

// attr reads one attribute.
func attr(t *testing.T, ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle, typ uint) []byte {
	t.Helper()
	a, err := ctx.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(typ, nil)})
	if err != nil {
		t.Fatalf("C_GetAttributeValue(0x%x): %v", typ, err)
	}
	return a[0].Value
}

func boolAttr(t *testing.T, ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle, typ uint) bool {
	t.Helper()
	v := attr(t, ctx, sh, h, typ)
	return len(v) == 1 && v[0] != 0
}

func TestNew(t *testing.T) {
	a := softhsm.New(t)
	b := softhsm.New(t, softhsm.Options{Label: "custom label", PIN: "987654", SOPIN: "87654321"})

	if got := os.Getenv("SOFTHSM2_CONF"); got != a.Config || a.Config != b.Config {
		t.Errorf("SOFTHSM2_CONF = %q; tokens have Config %q and %q", got, a.Config, b.Config)
	}
	if !strings.HasPrefix(filepath.Base(filepath.Dir(a.Config)), "mp-hsm-softhsm-") {
		t.Errorf("Config %s is not in an mp-hsm-softhsm- directory", a.Config)
	}
	if !strings.HasPrefix(a.Label, "mp-hsm-test-") || a.PIN != softhsm.DefaultPIN || a.SOPIN != softhsm.DefaultSOPIN {
		t.Errorf("default token: label %q, PIN %q, SO PIN %q", a.Label, a.PIN, a.SOPIN)
	}
	if b.Label != "custom label" || b.PIN != "987654" || b.SOPIN != "87654321" {
		t.Errorf("token with Options: label %q, PIN %q, SO PIN %q", b.Label, b.PIN, b.SOPIN)
	}
	if a.SlotID == b.SlotID || a.Serial == b.Serial {
		t.Errorf("two tokens share slot %d/%d or serial %q/%q", a.SlotID, b.SlotID, a.Serial, b.Serial)
	}

	ctx := module(t, a)
	for _, tok := range []*softhsm.Token{a, b} {
		info, err := ctx.GetTokenInfo(tok.SlotID)
		if err != nil {
			t.Fatalf("C_GetTokenInfo(%d): %v", tok.SlotID, err)
		}
		if info.Label != tok.Label || info.SerialNumber != tok.Serial {
			t.Errorf("slot %d holds %q serial %q, want %q serial %q", tok.SlotID, info.Label, info.SerialNumber, tok.Label, tok.Serial)
		}
		const want = pkcs11.CKF_TOKEN_INITIALIZED | pkcs11.CKF_USER_PIN_INITIALIZED | pkcs11.CKF_LOGIN_REQUIRED
		if info.Flags&want != want {
			t.Errorf("token %q flags %#x lack %#x", tok.Label, info.Flags, want)
		}
		login(t, ctx, tok) // the PIN works
	}
}

func TestNewLabelTooLong(t *testing.T) {
	store, err := softhsm.OpenStore(filepath.Dir(softhsm.New(t).Config))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.InitToken(strings.Repeat("x", 33), softhsm.DefaultPIN, softhsm.DefaultSOPIN); err == nil {
		t.Error("InitToken accepted a 33-byte label")
	}
}

// A subprocess inherits SOFTHSM2_CONF and sees the tokens made in this
// process.
func TestSubprocessSeesToken(t *testing.T) {
	tok := softhsm.New(t)
	cmd := testexec.Command(t, 0, testexec.Tool(t, "softhsm2-util", "softhsm2"), "--show-slots")
	cmd.Env = testexec.Env(t.TempDir(), "SOFTHSM2_CONF="+os.Getenv("SOFTHSM2_CONF"))
	res := testexec.Run(t, cmd)
	if res.Code != 0 {
		t.Fatalf("%s", res)
	}
	out := []byte(res.Stdout)
	if !bytes.Contains(out, []byte(tok.Serial)) || !bytes.Contains(out, []byte(tok.Label)) {
		t.Errorf("softhsm2-util --show-slots does not show token %q serial %s:\n%s", tok.Label, tok.Serial, out)
	}
}

// The process has one store.
func TestOpenStore(t *testing.T) {
	tok := softhsm.New(t)
	s, err := softhsm.OpenStore(filepath.Dir(tok.Config))
	if err != nil {
		t.Fatalf("OpenStore(the process store) = %v", err)
	}
	if s.Config != tok.Config || s.Module != tok.Module {
		t.Errorf("OpenStore(the process store) = %+v, token has Config %s Module %s", s, tok.Config, tok.Module)
	}
	if _, err := softhsm.OpenStore(t.TempDir()); err == nil {
		t.Error("OpenStore opened a second store")
	}
}

func TestModulePath(t *testing.T) {
	t.Setenv("SOFTHSM2_MODULE", "")
	if p, err := softhsm.ModulePath(); err != nil && !errors.Is(err, softhsm.ErrNotInstalled) {
		t.Errorf("ModulePath() = %q, %v; want a path or ErrNotInstalled", p, err)
	}
	t.Setenv("SOFTHSM2_MODULE", filepath.Join(t.TempDir(), "missing.so"))
	if _, err := softhsm.ModulePath(); err == nil || errors.Is(err, softhsm.ErrNotInstalled) {
		t.Errorf("ModulePath() with SOFTHSM2_MODULE naming a missing file = %v, want an error that is not ErrNotInstalled", err)
	}
}

func TestGenerate(t *testing.T) {
	tok := softhsm.New(t)
	tests := []struct {
		name string
		gen  func(softhsm.KeyOptions) crypto.PublicKey
		mech uint
		hash bool // the mechanism takes a digest
	}{
		{"RSA2048", func(o softhsm.KeyOptions) crypto.PublicKey { return tok.GenerateRSA(t, 2048, o) }, pkcs11.CKM_SHA256_RSA_PKCS, false},
		{"RSA3072", func(o softhsm.KeyOptions) crypto.PublicKey { return tok.GenerateRSA(t, 3072, o) }, pkcs11.CKM_SHA256_RSA_PKCS, false},
		{"P256", func(o softhsm.KeyOptions) crypto.PublicKey { return tok.GenerateEC(t, elliptic.P256(), o) }, pkcs11.CKM_ECDSA, true},
		{"P384", func(o softhsm.KeyOptions) crypto.PublicKey { return tok.GenerateEC(t, elliptic.P384(), o) }, pkcs11.CKM_ECDSA, true},
	}
	ctx := module(t, tok)
	sh := login(t, ctx, tok)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := []byte{0xa0, byte(i)}
			pub := tt.gen(softhsm.KeyOptions{ID: id, Label: tt.name})

			pubH := findOne(t, ctx, sh, pkcs11.CKO_PUBLIC_KEY, id)
			if got := onTokenPublic(t, ctx, sh, pubH, pub); !got.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
				t.Errorf("on-token public key differs from the returned one")
			}
			priv := findOne(t, ctx, sh, pkcs11.CKO_PRIVATE_KEY, id)
			for typ, want := range map[uint]bool{
				pkcs11.CKA_TOKEN: true, pkcs11.CKA_PRIVATE: true, pkcs11.CKA_SENSITIVE: true, pkcs11.CKA_SIGN: true,
				pkcs11.CKA_EXTRACTABLE: false, pkcs11.CKA_ALWAYS_AUTHENTICATE: false,
			} {
				if got := boolAttr(t, ctx, sh, priv, typ); got != want {
					t.Errorf("private key attribute 0x%x = %v, want %v", typ, got, want)
				}
			}
			for _, h := range []pkcs11.ObjectHandle{pubH, priv} {
				if got := string(attr(t, ctx, sh, h, pkcs11.CKA_LABEL)); got != tt.name {
					t.Errorf("CKA_LABEL = %q, want %q", got, tt.name)
				}
			}

			// The private key signs for the returned public key.
			msg := []byte("maskinporten grant")
			digest := sha256.Sum256(msg)
			in := msg
			if tt.hash {
				in = digest[:]
			}
			sig := sign(t, ctx, sh, priv, tt.mech, in, "")
			verify(t, pub, digest[:], sig)
		})
	}
}

// onTokenPublic reads the public key object h, of the same type as like.
func onTokenPublic(t *testing.T, ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle, like crypto.PublicKey) crypto.PublicKey {
	t.Helper()
	switch like := like.(type) {
	case *rsa.PublicKey:
		n := new(big.Int).SetBytes(attr(t, ctx, sh, h, pkcs11.CKA_MODULUS))
		e := new(big.Int).SetBytes(attr(t, ctx, sh, h, pkcs11.CKA_PUBLIC_EXPONENT))
		return &rsa.PublicKey{N: n, E: int(e.Int64())}
	case *ecdsa.PublicKey:
		var point []byte
		if _, err := asn1.Unmarshal(attr(t, ctx, sh, h, pkcs11.CKA_EC_POINT), &point); err != nil {
			t.Fatalf("CKA_EC_POINT: %v", err)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(like.Curve, point)
		if err != nil {
			t.Fatalf("CKA_EC_POINT: %v", err)
		}
		return pub
	}
	t.Fatalf("unexpected key type %T", like)
	return nil
}

// sign signs in with key; a non-empty contextPIN is given with
// C_Login(CKU_CONTEXT_SPECIFIC) between C_SignInit and C_Sign.
func sign(t *testing.T, ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, key pkcs11.ObjectHandle, mech uint, in []byte, contextPIN string) []byte {
	t.Helper()
	sig, err := trySign(ctx, sh, key, mech, in, contextPIN)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func trySign(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, key pkcs11.ObjectHandle, mech uint, in []byte, contextPIN string) ([]byte, error) {
	if err := ctx.SignInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, key); err != nil {
		return nil, fmt.Errorf("C_SignInit: %w", err)
	}
	if contextPIN != "" {
		if err := ctx.Login(sh, pkcs11.CKU_CONTEXT_SPECIFIC, contextPIN); err != nil {
			return nil, fmt.Errorf("C_Login(CKU_CONTEXT_SPECIFIC): %w", err)
		}
	}
	sig, err := ctx.Sign(sh, in)
	if err != nil {
		return nil, fmt.Errorf("C_Sign: %w", err)
	}
	return sig, nil
}

// verify checks a PKCS#11 signature (PKCS #1 v1.5, or raw r||s for ECDSA)
// over the SHA-256 digest.
func verify(t *testing.T, pub crypto.PublicKey, digest, sig []byte) {
	t.Helper()
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest, sig); err != nil {
			t.Errorf("RSA signature does not verify: %v", err)
		}
	case *ecdsa.PublicKey:
		half := len(sig) / 2
		r, s := new(big.Int).SetBytes(sig[:half]), new(big.Int).SetBytes(sig[half:])
		if !ecdsa.Verify(pub, digest, r, s) {
			t.Error("ECDSA signature does not verify")
		}
	}
}

func TestGenerateOptions(t *testing.T) {
	tok := softhsm.New(t)
	aa := tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{2}, AlwaysAuthenticate: true})
	tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{3}, NoSign: true, Extractable: true})
	def := tok.GenerateEC(t, elliptic.P256(), softhsm.KeyOptions{})

	ctx := module(t, tok)
	sh := login(t, ctx, tok)
	msg := []byte("grant")
	digest := sha256.Sum256(msg)

	t.Run("AlwaysAuthenticate", func(t *testing.T) {
		priv := findOne(t, ctx, sh, pkcs11.CKO_PRIVATE_KEY, []byte{2})
		if !boolAttr(t, ctx, sh, priv, pkcs11.CKA_ALWAYS_AUTHENTICATE) {
			t.Fatal("CKA_ALWAYS_AUTHENTICATE is not set")
		}
		// SoftHSM2 enforces it: no signature without the context login.
		if _, err := trySign(ctx, sh, priv, pkcs11.CKM_SHA256_RSA_PKCS, msg, ""); !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)) {
			t.Errorf("signing without C_Login(CKU_CONTEXT_SPECIFIC) = %v, want CKR_USER_NOT_LOGGED_IN", err)
		}
		verify(t, aa, digest[:], sign(t, ctx, sh, priv, pkcs11.CKM_SHA256_RSA_PKCS, msg, tok.PIN))
	})
	t.Run("NoSign", func(t *testing.T) {
		priv := findOne(t, ctx, sh, pkcs11.CKO_PRIVATE_KEY, []byte{3})
		if boolAttr(t, ctx, sh, priv, pkcs11.CKA_SIGN) {
			t.Error("CKA_SIGN is set")
		}
		if !boolAttr(t, ctx, sh, priv, pkcs11.CKA_EXTRACTABLE) || !boolAttr(t, ctx, sh, priv, pkcs11.CKA_SENSITIVE) {
			t.Error("want CKA_EXTRACTABLE and CKA_SENSITIVE")
		}
		if _, err := trySign(ctx, sh, priv, pkcs11.CKM_SHA256_RSA_PKCS, msg, ""); !errors.Is(err, pkcs11.Error(pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED)) {
			t.Errorf("signing = %v, want CKR_KEY_FUNCTION_NOT_PERMITTED", err)
		}
	})
	t.Run("DefaultID", func(t *testing.T) {
		id, err := softhsm.KeyID(def)
		if err != nil {
			t.Fatal(err)
		}
		findOne(t, ctx, sh, pkcs11.CKO_PUBLIC_KEY, id)
		findOne(t, ctx, sh, pkcs11.CKO_PRIVATE_KEY, id)
	})
}

// The harness keeps working while code under test is logged in, and
// leaves that login in place.
func TestGenerateWhileLoggedIn(t *testing.T) {
	tok := softhsm.New(t)
	ctx := module(t, tok)
	sh := login(t, ctx, tok)
	tok.GenerateEC(t, elliptic.P256(), softhsm.KeyOptions{ID: []byte{9}})
	info, err := ctx.GetSessionInfo(sh)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != pkcs11.CKS_RO_USER_FUNCTIONS {
		t.Errorf("session state after GenerateEC = %d, want CKS_RO_USER_FUNCTIONS", info.State)
	}
}

// Code under test that calls C_Finalize does not break the harness.
func TestAfterFinalize(t *testing.T) {
	tok := softhsm.New(t)
	ctx := module(t, tok)
	if err := ctx.Finalize(); err != nil {
		t.Fatalf("C_Finalize: %v", err)
	}
	tok.GenerateEC(t, elliptic.P256(), softhsm.KeyOptions{})
	softhsm.New(t).GenerateEC(t, elliptic.P256(), softhsm.KeyOptions{})
}

func TestNewWithKey(t *testing.T) {
	ca := newCA(t, softhsm.EnvTest)
	for _, tt := range []struct {
		name string
		new  func(softhsm.KeyOptions) (*softhsm.Token, *x509.Certificate)
	}{
		{"RSA", func(o softhsm.KeyOptions) (*softhsm.Token, *x509.Certificate) {
			return softhsm.NewWithKey(t, ca, o, softhsm.LeafOptions{})
		}},
		{"EC", func(o softhsm.KeyOptions) (*softhsm.Token, *x509.Certificate) {
			return softhsm.NewWithECKey(t, ca, elliptic.P256(), o, softhsm.LeafOptions{})
		}},
	} {
		for _, id := range [][]byte{{1}, nil} {
			t.Run(fmt.Sprintf("%s/id=%x", tt.name, id), func(t *testing.T) {
				tok, leaf := tt.new(softhsm.KeyOptions{ID: id, Label: "auth"})
				ctx := module(t, tok)
				sh := login(t, ctx, tok)
				if id == nil {
					id = leaf.SubjectKeyId
				}
				findOne(t, ctx, sh, pkcs11.CKO_PRIVATE_KEY, id)
				pubH := findOne(t, ctx, sh, pkcs11.CKO_PUBLIC_KEY, id)
				if pub := onTokenPublic(t, ctx, sh, pubH, leaf.PublicKey); !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
					t.Error("the leaf certifies another key than the one on the token")
				}
				certH := findOne(t, ctx, sh, pkcs11.CKO_CERTIFICATE, id)
				if !bytes.Equal(attr(t, ctx, sh, certH, pkcs11.CKA_VALUE), leaf.Raw) {
					t.Error("leaf CKA_VALUE differs")
				}
				if got := string(attr(t, ctx, sh, certH, pkcs11.CKA_LABEL)); got != "auth" {
					t.Errorf("leaf CKA_LABEL = %q", got)
				}
				intH := findOne(t, ctx, sh, pkcs11.CKO_CERTIFICATE, ca.Intermediate.SubjectKeyId)
				if !bytes.Equal(attr(t, ctx, sh, intH, pkcs11.CKA_VALUE), ca.Intermediate.Raw) {
					t.Error("intermediate CKA_VALUE differs")
				}
			})
		}
	}
}

func TestWriteCertificate(t *testing.T) {
	ca := newCA(t, softhsm.EnvTest)
	tok := softhsm.New(t)
	pub := tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{0x01}})
	leaf, err := ca.IssueLeaf(pub, softhsm.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok.WriteCertificate(t, leaf, []byte{0x01}, "Authentication")

	ctx := module(t, tok)
	sh, err := ctx.OpenSession(tok.SlotID, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.CloseSession(sh)
	// Certificates are public: found without logging in.
	h := findOne(t, ctx, sh, pkcs11.CKO_CERTIFICATE, []byte{0x01})
	serial, _ := asn1.Marshal(leaf.SerialNumber)
	for typ, want := range map[uint][]byte{
		pkcs11.CKA_VALUE:            leaf.Raw,
		pkcs11.CKA_SUBJECT:          leaf.RawSubject,
		pkcs11.CKA_ISSUER:           leaf.RawIssuer,
		pkcs11.CKA_SERIAL_NUMBER:    serial,
		pkcs11.CKA_LABEL:            []byte("Authentication"),
		pkcs11.CKA_CERTIFICATE_TYPE: attrBytes(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509),
		pkcs11.CKA_TOKEN:            {1},
	} {
		if got := attr(t, ctx, sh, h, typ); !bytes.Equal(got, want) {
			t.Errorf("attribute 0x%x = %x, want %x", typ, got, want)
		}
	}
}

func attrBytes(typ uint, v any) []byte { return pkcs11.NewAttribute(typ, v).Value }

// Harness operations from many goroutines are serialised.
func TestConcurrent(t *testing.T) {
	store, err := softhsm.OpenStore(filepath.Dir(softhsm.New(t).Config))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			tok, err := store.InitToken(fmt.Sprintf("concurrent-%d", i), softhsm.DefaultPIN, softhsm.DefaultSOPIN)
			if err == nil {
				_, err = tok.GenerateECKey(elliptic.P256(), softhsm.KeyOptions{})
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
}
