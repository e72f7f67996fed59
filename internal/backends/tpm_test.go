//go:build cgo

package backends

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// startTPMs starts n TPM backends at once, each in a new directory, and
// stops them in t.Cleanup, failing t if Stop fails. Without swtpm and the
// rest it skips, unless CI is set.
func startTPMs(t *testing.T, n int) []*Running {
	t.Helper()
	needTPM(t)
	rs, errs := make([]*Running, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range rs {
		dir := shortTempDir(t)
		wg.Go(func() { rs[i], errs[i] = StartTPM(dir) })
	}
	wg.Wait()
	for _, r := range rs {
		if r != nil {
			t.Cleanup(func() {
				if err := r.Stop(); err != nil {
					t.Error(err)
				}
			})
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return rs
}

// needTPM skips t when what StartTPM runs is not installed, or fails it
// when CI is set.
func needTPM(t *testing.T) {
	t.Helper()
	if _, err := tpmFind(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err.Error() + "; with CI set, this fails the test")
	}
}

// shortTempDir is a temporary directory with a path short enough for the
// unix sockets in it (t.TempDir's paths grow with the test's name).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tpm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// processesIn returns the command lines of the processes whose command
// line mentions dir.
func processesIn(t *testing.T, dir string) []string {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(dir)) {
			continue // gone meanwhile, or not ours
		}
		found = append(found, p+": "+strings.ReplaceAll(string(bytes.TrimRight(b, "\x00")), "\x00", " "))
	}
	return found
}

func TestStartTPMTwice(t *testing.T) {
	pkcs11Tool := testexec.Tool(t, "pkcs11-tool", "opensc")
	rs := startTPMs(t, 2) // at once: StartTPM may run concurrently
	a, b := rs[0], rs[1]
	if a.Getenv("TPM2_PKCS11_STORE") == b.Getenv("TPM2_PKCS11_STORE") || a.Getenv("TPM2_PKCS11_TCTI") == b.Getenv("TPM2_PKCS11_TCTI") {
		t.Fatalf("two backends share a store or a TCTI: %q, %q", a.Env, b.Env)
	}
	for _, r := range []*Running{a, b} {
		if r.Name != "tpm2-pkcs11" || r.Label != tpmLabel || r.PIN == "" || r.SOPIN == "" || r.Serial == "" || len(r.Notes) == 0 {
			t.Errorf("Running %+v", r)
		}
		if !strings.Contains(r.Version, "libtpm2-pkcs11-1 ") || !strings.Contains(r.Version, "swtpm ") {
			t.Errorf("Version %q names neither libtpm2-pkcs11-1 nor swtpm", r.Version)
		}
		dir := filepath.Dir(r.Getenv("TPM2_PKCS11_STORE"))
		if len(processesIn(t, dir)) < 3 {
			t.Errorf("%s: processes %q, want swtpm, dbus-daemon and tpm2-abrmd", dir, processesIn(t, dir))
		}
		// Another process sees the token, initialised, through the
		// resource manager, with only Env (and a HOME of its own).
		home := t.TempDir()
		cmd := testexec.Command(t, time.Minute, pkcs11Tool, "--module", r.Module, "--list-token-slots")
		cmd.Env = testexec.Env(home, r.Env...)
		res := testexec.Run(t, cmd)
		if res.Code != 0 || !strings.Contains(res.Stdout, "token label        : "+r.Label) ||
			!strings.Contains(res.Stdout, "PIN initialized") || !strings.Contains(res.Stdout, "serial num         : "+r.Serial) {
			t.Errorf("pkcs11-tool does not list the initialised token:\n%s", res)
		}
		if _, err := os.Stat(filepath.Join(home, ".tpm2_pkcs11")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("tpm2-pkcs11 made %s/.tpm2_pkcs11 (%v)", home, err)
		}
	}
	for _, r := range []*Running{a, b} {
		dir := filepath.Dir(r.Getenv("TPM2_PKCS11_STORE"))
		if err := r.Stop(); err != nil {
			t.Fatal(err)
		}
		if left := processesIn(t, dir); len(left) > 0 {
			t.Errorf("after Stop, still running: %q", left)
		}
		if err := r.Stop(); err != nil {
			t.Errorf("second Stop: %v", err)
		}
	}
}

// TestStartTPMFails: a directory that cannot hold the sockets, or a store
// that is no tpm2-pkcs11 store, is an error that says what failed, and
// nothing is left running.
func TestStartTPMFails(t *testing.T) {
	needTPM(t)
	long := filepath.Join(shortTempDir(t), strings.Repeat("d", 100))
	r, err := StartTPM(long)
	if err == nil || r != nil || !strings.Contains(err.Error(), "too long for a unix socket") {
		t.Fatalf("StartTPM(%d-byte dir) = %v, %v", len(long), r, err)
	}

	// The daemons start, then the token initialiser fails on the store.
	dir := shortTempDir(t)
	if err := os.MkdirAll(filepath.Join(dir, "store"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "store", "tpm2_pkcs11.sqlite3"), []byte("not a database\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err = StartTPM(dir)
	if err == nil || r != nil || !strings.Contains(err.Error(), "initialising the token") || !strings.Contains(err.Error(), "C_Initialize") {
		t.Fatalf("StartTPM on a broken store = %v, %v; want the initialiser's C_Initialize error", r, err)
	}
	t.Logf("StartTPM on a broken store: %v", err)
	if left := processesIn(t, dir); len(left) > 0 {
		t.Errorf("after a failed StartTPM, still running: %q", left)
	}
}

// useTPM sets the process environment that the module needs to reach r,
// and a HOME of the test's own.
func useTPM(t *testing.T, r *Running) (home string) {
	t.Helper()
	for _, kv := range r.Env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	home = t.TempDir()
	t.Setenv("HOME", home)
	return home
}

// tpmKey is a key pair that tpmGenerate made.
type tpmKey struct {
	id     []byte
	label  string
	public crypto.PublicKey
}

// tpmGenerate generates a key pair on r's token through PKCS#11: "rsa2048",
// "rsa4096" or "ec-p256"; private, sensitive, not extractable. It checks
// those attributes on the private key as the token reports them.
func tpmGenerate(t *testing.T, r *Running, kind string, id []byte, label string, alwaysAuth bool) (tpmKey, error) {
	t.Helper()
	p, sh := tpmSession(t, r)
	defer tpmClose(t, p, sh)
	common := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	pub := append([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true)}, common...)
	priv := append([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
	}, common...)
	if alwaysAuth {
		priv = append(priv, pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_AUTHENTICATE, true))
	}
	var mech, keyType uint
	switch kind {
	case "rsa2048", "rsa4096":
		bits := map[string]int{"rsa2048": 2048, "rsa4096": 4096}[kind]
		mech, keyType = pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11.CKK_RSA
		pub = append(pub, pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
	case "ec-p256":
		mech, keyType = pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKK_EC
		pub = append(pub, pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}))
	default:
		t.Fatalf("tpmGenerate: kind %q", kind)
	}
	// CKA_CLASS and CKA_KEY_TYPE too, as the generic GenerateKey sets them.
	pub = append(pub, pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType))
	priv = append(priv, pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType))
	pubH, privH, err := p.GenerateKeyPair(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, pub, priv)
	if err != nil {
		return tpmKey{}, err
	}
	attrs, err := p.GetAttributeValue(sh, privH, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_AUTHENTICATE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, nil),
	})
	if err != nil {
		t.Fatalf("C_GetAttributeValue of the new private key: %v", err)
	}
	want := []bool{true, false, alwaysAuth, true}
	for i, a := range attrs {
		if got := len(a.Value) == 1 && a.Value[0] == 1; got != want[i] {
			t.Errorf("%s key: attribute %#x is %v, want %v", kind, a.Type, a.Value, want[i])
		}
	}
	k := tpmKey{id: id, label: label}
	if kind == "ec-p256" {
		a, err := p.GetAttributeValue(sh, pubH, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
		if err != nil {
			t.Fatalf("C_GetAttributeValue(CKA_EC_POINT): %v", err)
		}
		point := a[0].Value
		if len(point) > 2 && point[0] == 0x04 && int(point[1]) == len(point)-2 { // DER OCTET STRING
			point = point[2:]
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
		if err != nil {
			t.Fatalf("CKA_EC_POINT %x: %v", a[0].Value, err)
		}
		k.public = pub
	} else {
		a, err := p.GetAttributeValue(sh, pubH, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil), pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil)})
		if err != nil {
			t.Fatalf("C_GetAttributeValue(CKA_MODULUS): %v", err)
		}
		k.public = &rsa.PublicKey{N: new(big.Int).SetBytes(a[0].Value), E: int(new(big.Int).SetBytes(a[1].Value).Int64())}
	}
	return k, nil
}

// tpmPutCertificate stores cert on r's token with id and label
// (C_CreateObject).
func tpmPutCertificate(t *testing.T, r *Running, cert *x509.Certificate, id []byte, label string) {
	t.Helper()
	p, sh := tpmSession(t, r)
	defer tpmClose(t, p, sh)
	serial, err := asn1.Marshal(cert.SerialNumber)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.CreateObject(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SERIAL_NUMBER, serial),
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		pkcs11.NewAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_SUBJECT, cert.RawSubject),
		pkcs11.NewAttribute(pkcs11.CKA_ISSUER, cert.RawIssuer),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, cert.Raw),
	})
	if err != nil {
		t.Fatalf("C_CreateObject(certificate %q): %v", label, err)
	}
}

// tpmSession loads r's module in this process (useTPM must have set the
// environment), and opens a read-write session logged in as the user.
func tpmSession(t *testing.T, r *Running) (*pkcs11.Ctx, pkcs11.SessionHandle) {
	t.Helper()
	p := pkcs11.New(r.Module)
	if p == nil {
		t.Fatalf("cannot load %s", r.Module)
	}
	if err := p.Initialize(); err != nil {
		t.Fatalf("C_Initialize: %v", err)
	}
	slot := tpmSlot(t, p, r.Label)
	sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatalf("C_OpenSession: %v", err)
	}
	if err := p.Login(sh, pkcs11.CKU_USER, r.PIN); err != nil {
		t.Fatalf("C_Login: %v", err)
	}
	return p, sh
}

func tpmClose(t *testing.T, p *pkcs11.Ctx, sh pkcs11.SessionHandle) {
	t.Helper()
	if err := p.CloseSession(sh); err != nil {
		t.Errorf("C_CloseSession: %v", err)
	}
	if err := p.Finalize(); err != nil {
		t.Errorf("C_Finalize: %v", err)
	}
	p.Destroy()
}

// tpmSlot finds the slot of the token labelled label.
func tpmSlot(t *testing.T, p *pkcs11.Ctx, label string) uint {
	t.Helper()
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.Fatalf("C_GetSlotList: %v", err)
	}
	for _, s := range slots {
		if ti, err := p.GetTokenInfo(s); err == nil && strings.TrimRight(ti.Label, " ") == label {
			return s
		}
	}
	t.Fatalf("no token labelled %q in slots %v", label, slots)
	return 0
}

// issue makes a certificate for pub, signed by a CA made here, and returns
// it and the CA's.
func issue(t *testing.T, pub crypto.PublicKey, cn string) (leaf, ca *x509.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tpm test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if leaf, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	return leaf, ca
}

// TestTPMToken runs, on one TPM backend used by this process, the tests
// below; each generates keys of its own.
func TestTPMToken(t *testing.T) {
	r := startTPMs(t, 1)[0]
	home := useTPM(t, r)
	t.Run("sign", func(t *testing.T) { testTPMSign(t, r) })
	t.Run("rsa4096-refused", func(t *testing.T) { testTPMRSA4096Refused(t, r) })
	t.Run("always-authenticate", func(t *testing.T) { testTPMAlwaysAuthenticate(t, r) })
	t.Run("lockout", func(t *testing.T) { testTPMLockout(t, r) })
	if _, err := os.Stat(filepath.Join(home, ".tpm2_pkcs11")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tpm2-pkcs11 made ~/.tpm2_pkcs11 (%v)", err)
	}
}

// testTPMSign: keys generated on the TPM token, a certificate stored
// beside one, and the project's own hsm and signer/p11 list the token, log
// in and sign RS256, PS256 and ES256 with them.
func testTPMSign(t *testing.T, r *Running) {
	rsaKey, err := tpmGenerate(t, r, "rsa2048", []byte{1}, "rsa", false)
	if err != nil {
		t.Fatalf("generating RSA-2048: %v", err)
	}
	ecKey, err := tpmGenerate(t, r, "ec-p256", []byte{2}, "ec", false)
	if err != nil {
		t.Fatalf("generating EC P-256: %v", err)
	}
	leaf, ca := issue(t, rsaKey.public, "tpm rsa")
	tpmPutCertificate(t, r, leaf, rsaKey.id, "rsa")
	tpmPutCertificate(t, r, ca, []byte{0xca}, "ca")

	// The token is listed, and found by label and by serial.
	m, err := hsm.Open(r.Module)
	if err != nil {
		t.Fatal(err)
	}
	slots, err := m.Slots()
	if err != nil {
		t.Fatal(err)
	}
	var listed bool
	for _, s := range slots {
		listed = listed || s.Token != nil && s.Token.Label == r.Label && s.Token.Serial == r.Serial
	}
	if !listed {
		t.Errorf("hsm lists %v, not the token %q (serial %q)", slots, r.Label, r.Serial)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	// tpm2-pkcs11 offers no RSA-PSS on swtpm: C_GetMechanismList lacks
	// CKM_RSA_PKCS_PSS (the suite reports PS256 as not supported by this
	// token). Asked anyway, it keeps a pointer to the caller's PSS
	// parameters from C_SignInit and reads them in C_Sign; hsm keeps them
	// until C_Sign returns (hsm's TestPSSParamsLiveUntilSign shows that on
	// a module that reads them as tpm2-pkcs11 does), so the signature is
	// made or refused as not offered (CKR_MECHANISM_INVALID).
	mechs := tpmMechanisms(t, r)
	if mechs[pkcs11.CKM_RSA_PKCS_PSS] || mechs[pkcs11.CKM_SHA256_RSA_PKCS_PSS] {
		t.Errorf("the token now offers RSA-PSS: the notes and this test say it does not")
	}
	for _, need := range []uint{pkcs11.CKM_RSA_PKCS, pkcs11.CKM_ECDSA, pkcs11.CKM_RSA_X_509} {
		if !mechs[need] {
			t.Errorf("the token does not offer mechanism %#x", need)
		}
	}
	for _, c := range []struct {
		alg string
		key tpmKey
	}{{"RS256", rsaKey}, {"PS256", rsaKey}, {"ES256", ecKey}} {
		t.Run(c.alg, func(t *testing.T) {
			s, err := p11.Open(p11.Config{
				Module: r.Module,
				Token:  hsm.TokenSelector{Label: r.Label, Serial: r.Serial},
				Key:    hsm.KeySelector{ID: c.key.id},
				PIN:    hsm.StaticPIN([]byte(r.PIN)),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !publicEqual(s.Public(), c.key.public) {
				t.Fatalf("the signer's public key is not the one generated")
			}
			if bytes.Equal(c.key.id, rsaKey.id) {
				if ch := s.Chain(); len(ch) != 1 || !ch[0].Equal(leaf) {
					t.Errorf("chain read from the token: %d certificates, want the leaf", len(ch))
				}
			}
			m, err := signer.Method(c.alg)
			if err != nil {
				t.Fatal(err)
			}
			const signing = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJ0cG0ifQ"
			sig, err := m.Sign(signing, s)
			if c.alg == "PS256" && errors.Is(err, tokenerr.ErrUnsupported) && errors.Is(err, pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID)) {
				t.Logf("PS256 on the TPM, which does not offer RSA-PSS: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("%s on the TPM: %v", c.alg, err)
			}
			if err := m.Verify(signing, sig, c.key.public); err != nil {
				t.Errorf("%s signature does not verify: %v", c.alg, err)
			}
		})
	}
}

func publicEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// testTPMRSA4096Refused: the TPM refuses RSA-4096 keys, as the notes say.
func testTPMRSA4096Refused(t *testing.T, r *Running) {
	_, err := tpmGenerate(t, r, "rsa4096", []byte{4}, "rsa4096", false)
	if !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_VALUE_INVALID)) {
		t.Fatalf("generating an RSA-4096 key: %v; the notes say CKR_ATTRIBUTE_VALUE_INVALID", err)
	}
	p, sh := tpmSession(t, r)
	defer tpmClose(t, p, sh)
	mi, err := p.GetMechanismInfo(tpmSlot(t, p, r.Label), []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)})
	if err != nil {
		t.Fatalf("C_GetMechanismInfo(CKM_RSA_PKCS_KEY_PAIR_GEN): %v", err)
	}
	if mi.MinKeySize != 1024 || mi.MaxKeySize != 3072 {
		t.Errorf("RSA key sizes %d to %d; the notes say 1024 to 3072", mi.MinKeySize, mi.MaxKeySize)
	}
}

// tpmMechanisms returns the mechanisms r's token offers.
func tpmMechanisms(t *testing.T, r *Running) map[uint]bool {
	t.Helper()
	p, sh := tpmSession(t, r)
	defer tpmClose(t, p, sh)
	ms, err := p.GetMechanismList(tpmSlot(t, p, r.Label))
	if err != nil {
		t.Fatalf("C_GetMechanismList: %v", err)
	}
	got := map[uint]bool{}
	for _, m := range ms {
		got[m.Mechanism] = true
	}
	return got
}

// scriptedPIN is a PIN source that answers each call with the next of its
// answers: a PIN, or an error. It counts the calls.
type scriptedPIN struct {
	mu      sync.Mutex
	answers []any // string or error
	calls   int
}

func (s *scriptedPIN) source() hsm.PINSource {
	return func() ([]byte, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.calls >= len(s.answers) {
			return nil, fmt.Errorf("PIN source asked %d times, scripted for %d", s.calls+1, len(s.answers))
		}
		a := s.answers[s.calls]
		s.calls++
		if err, ok := a.(error); ok {
			return nil, err
		}
		return []byte(a.(string)), nil
	}
}

func (s *scriptedPIN) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

var errNoPIN = errors.New("no PIN this time")

// testTPMAlwaysAuthenticate: what tpm2-pkcs11 does with a key that has
// CKA_ALWAYS_AUTHENTICATE, and that hsm signs, fails and signs again on it
// without ever meeting CKR_OPERATION_ACTIVE.
func testTPMAlwaysAuthenticate(t *testing.T, r *Running) {
	// EC keys: the TPM makes them much faster than RSA keys.
	aa, err := tpmGenerate(t, r, "ec-p256", []byte{0xaa, 3}, "always", true)
	if err != nil {
		t.Fatalf("generating an EC key with CKA_ALWAYS_AUTHENTICATE: %v", err)
	}
	plain, err := tpmGenerate(t, r, "ec-p256", []byte{0xaa, 4}, "plain", false)
	if err != nil {
		t.Fatalf("generating EC P-256: %v", err)
	}
	digest := sha256.Sum256([]byte("tpm"))

	// The module itself: a C_Sign without the context login fails, and
	// leaves the operation active, so the next C_SignInit on that session
	// answers CKR_OPERATION_ACTIVE. This is why hsm replaces a session
	// whose signature failed.
	t.Run("module", func(t *testing.T) {
		p, sh := tpmSession(t, r)
		defer tpmClose(t, p, sh)
		key := tpmFindKey(t, p, sh, aa.id)
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}
		in := digest[:]
		if err := p.SignInit(sh, mech, key); err != nil {
			t.Fatalf("C_SignInit: %v", err)
		}
		_, err := p.Sign(sh, in)
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)) {
			t.Fatalf("C_Sign without the context login: %v, want CKR_USER_NOT_LOGGED_IN", err)
		}
		err = p.SignInit(sh, mech, key)
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_OPERATION_ACTIVE)) {
			t.Fatalf("C_SignInit after the failed C_Sign: %v, want CKR_OPERATION_ACTIVE (the module changed: see hsm.Key.SignContext)", err)
		}
		t.Logf("C_Sign without a context login: CKR_USER_NOT_LOGGED_IN; then C_SignInit on that session: CKR_OPERATION_ACTIVE")
	})

	// hsm on one signing session: the replaced session signs again.
	m, err := hsm.Open(r.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	slot, err := m.FindSlot(hsm.TokenSelector{Label: r.Label})
	if err != nil {
		t.Fatal(err)
	}

	// A wrong PIN: one C_Login, and the token's flags say nothing of it.
	tok, err := m.OpenSlot(slot, hsm.TokenOptions{MaxSessions: 1})
	if err != nil {
		t.Fatal(err)
	}
	var pe *hsm.PINError
	err = tok.Login(hsm.StaticPIN([]byte("000000")), hsm.LoginOptions{})
	if !errors.As(err, &pe) || !errors.Is(err, tokenerr.ErrPINIncorrect) || !pe.Attempted {
		t.Fatalf("Login with a wrong PIN: %v, want ErrPINIncorrect", err)
	}
	if pe.Flags.PINCountLow() || pe.Flags.PINFinalTry() || pe.Flags.PINLocked() {
		t.Errorf("after a wrong PIN the token reports %v; the notes say it never does", pe.Flags)
	}
	if n := tpmLockoutCounter(t, r); n < 1 {
		t.Errorf("after a wrong PIN the TPM's lockout counter is %d; the notes say it counts", n)
	}
	if err := tok.Close(); err != nil {
		t.Fatal(err)
	}

	pins := &scriptedPIN{answers: []any{
		r.PIN,    // Login
		r.PIN,    // 1st signature: signs
		errNoPIN, // 2nd: no context login, after C_SignInit
		r.PIN,    // 3rd: signs on a new session
		"000000", // 4th: a wrong PIN in the context login
	}}
	tok, err = m.OpenSlot(slot, hsm.TokenOptions{MaxSessions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(pins.source(), hsm.LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	aaKey, err := tok.FindKey(hsm.KeySelector{ID: aa.id})
	if err != nil {
		t.Fatal(err)
	}
	if !aaKey.Info().AlwaysAuthenticate {
		t.Fatalf("hsm does not see CKA_ALWAYS_AUTHENTICATE on %v", aaKey)
	}
	plainKey, err := tok.FindKey(hsm.KeySelector{ID: plain.id})
	if err != nil {
		t.Fatal(err)
	}
	signs := func(k *hsm.Key, pub crypto.PublicKey) {
		t.Helper()
		sig, err := k.Sign(nil, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatalf("signing with %v: %v", k, err)
		}
		switch pub := pub.(type) {
		case *rsa.PublicKey:
			err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
		case *ecdsa.PublicKey:
			if !ecdsa.VerifyASN1(pub, digest[:], sig) {
				err = errors.New("ECDSA signature does not verify")
			}
		}
		if err != nil {
			t.Fatalf("signature of %v: %v", k, err)
		}
	}

	signs(aaKey, aa.public)
	if _, err := aaKey.Sign(nil, digest[:], crypto.SHA256); !errors.Is(err, errNoPIN) {
		t.Fatalf("signing when the PIN source fails: %v, want %v", err, errNoPIN)
	}
	signs(aaKey, aa.public) // not CKR_OPERATION_ACTIVE: the session was replaced
	signs(plainKey, plain.public)

	_, err = aaKey.Sign(nil, digest[:], crypto.SHA256)
	if !errors.As(err, &pe) || !errors.Is(err, tokenerr.ErrPINIncorrect) || !pe.Attempted {
		t.Fatalf("context login with a wrong PIN: %v, want ErrPINIncorrect", err)
	}
	asked := pins.count()
	_, err = aaKey.Sign(nil, digest[:], crypto.SHA256)
	if !errors.As(err, &pe) || pe.Attempted || pins.count() != asked {
		t.Fatalf("after a wrong context PIN, signing again: %v (PIN source asked %d times, was %d); want the refusal, not presented again", err, pins.count(), asked)
	}
	signs(plainKey, plain.public) // the user login holds, and the session is usable
	if pins.count() != len(pins.answers) {
		t.Errorf("PIN source asked %d times, want %d", pins.count(), len(pins.answers))
	}
}

// tpmFindKey finds the private key with CKA_ID id.
func tpmFindKey(t *testing.T, p *pkcs11.Ctx, sh pkcs11.SessionHandle, id []byte) pkcs11.ObjectHandle {
	t.Helper()
	if err := p.FindObjectsInit(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, id)}); err != nil {
		t.Fatalf("C_FindObjectsInit: %v", err)
	}
	hs, _, err := p.FindObjects(sh, 2)
	if err2 := p.FindObjectsFinal(sh); err == nil {
		err = err2
	}
	if err != nil || len(hs) != 1 {
		t.Fatalf("C_FindObjects(private key %x): %v, %d found", id, err, len(hs))
	}
	return hs[0]
}

// tpmLockoutCounter reads the TPM's dictionary-attack counter
// (TPM2_PT_LOCKOUT_COUNTER) with tpm2_getcap.
func tpmLockoutCounter(t *testing.T, r *Running) int64 {
	t.Helper()
	cmd := testexec.Command(t, time.Minute, testexec.Tool(t, "tpm2_getcap", "tpm2-tools"), "properties-variable")
	cmd.Env = testexec.Env(t.TempDir(), r.Env...)
	res := testexec.Run(t, cmd)
	for _, line := range strings.Split(res.Stdout, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "TPM2_PT_LOCKOUT_COUNTER:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 0, 64)
			if err != nil {
				t.Fatalf("TPM2_PT_LOCKOUT_COUNTER %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatalf("tpm2_getcap shows no TPM2_PT_LOCKOUT_COUNTER:\n%s", res)
	return 0
}

// BenchmarkStartTPM measures StartTPM and Stop: swtpm, dbus-daemon,
// tpm2-abrmd, the lockout relaxed, the token initialised, all ended.
func BenchmarkStartTPM(b *testing.B) {
	if _, err := tpmFind(); err != nil {
		b.Skip(err)
	}
	for b.Loop() {
		dir, err := os.MkdirTemp("", "tpm")
		if err != nil {
			b.Fatal(err)
		}
		r, err := StartTPM(dir)
		if err != nil {
			b.Fatal(err)
		}
		if err := errors.Join(r.Stop(), os.RemoveAll(dir)); err != nil {
			b.Fatal(err)
		}
	}
}

// testTPMLockout: what the token says once the TPM's dictionary-attack
// lockout has struck.
func testTPMLockout(t *testing.T, r *Running) {
	lockout := func(args ...string) {
		t.Helper()
		cmd := testexec.Command(t, time.Minute, testexec.Tool(t, "tpm2_dictionarylockout", "tpm2-tools"), args...)
		cmd.Env = testexec.Env(t.TempDir(), r.Env...)
		if res := testexec.Run(t, cmd); res.Code != 0 {
			t.Fatal(res)
		}
	}
	lockout("--setup-parameters", "--max-tries=2", "--recovery-time=600", "--lockout-recovery-time=1", "--clear-lockout")
	defer lockout("--setup-parameters", "--max-tries=1000", "--recovery-time=1", "--lockout-recovery-time=1", "--clear-lockout")
	m, err := hsm.Open(r.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	slot, err := m.FindSlot(hsm.TokenSelector{Label: r.Label})
	if err != nil {
		t.Fatal(err)
	}
	login := func(pin string) (*hsm.PINError, error) {
		t.Helper()
		tok, err := m.OpenSlot(slot, hsm.TokenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer tok.Close()
		err = tok.Login(hsm.StaticPIN([]byte(pin)), hsm.LoginOptions{})
		var pe *hsm.PINError
		errors.As(err, &pe)
		return pe, err
	}
	for i := range 2 {
		pe, err := login("000000")
		if !errors.Is(err, tokenerr.ErrPINIncorrect) || pe.Flags.PINCountLow() || pe.Flags.PINFinalTry() || pe.Flags.PINLocked() {
			t.Fatalf("wrong PIN %d of 2: %v, flags %v; want ErrPINIncorrect and no PIN flags", i+1, err, pe.Flags)
		}
	}
	pe, err := login(r.PIN)
	if !errors.Is(err, tokenerr.ErrPINLocked) || !pe.Attempted || pe.Flags.PINLocked() || !strings.Contains(err.Error(), "dictionary-attack lockout") {
		t.Fatalf("the right PIN in the TPM's lockout: %v (flags %v), want ErrPINLocked after one C_Login, no flag, the lockout named", err, pe.Flags)
	}

	// Nor does the SO PIN help: the TPM refuses every authorisation.
	p := pkcs11.New(r.Module)
	defer p.Destroy()
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		t.Fatalf("C_Initialize: %v", err)
	}
	sh, err := p.OpenSession(slot.ID, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatalf("C_OpenSession: %v", err)
	}
	err = p.Login(sh, pkcs11.CKU_SO, r.SOPIN)
	p.CloseSession(sh)
	if !errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_LOCKED)) {
		t.Fatalf("the SO PIN in the TPM's lockout: %v, want CKR_PIN_LOCKED", err)
	}

	lockout("--setup-parameters", "--max-tries=1000", "--recovery-time=1", "--lockout-recovery-time=1", "--clear-lockout")
	if _, err := login(r.PIN); err != nil {
		t.Fatalf("the right PIN once the lockout was cleared: %v", err)
	}
}
