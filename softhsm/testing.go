package softhsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
)

// process is the store New uses: one per process, in a temporary
// directory that Main removes.
var process struct {
	once  sync.Once
	store *Store
	err   error
	dir   string // guarded by mu; empty once Main has removed it

	main     atomic.Bool // Main is running the tests
	warnOnce sync.Once
	labels   atomic.Int64 // last "mp-hsm-test-N" label number
}

// processStore opens the process store on first use.
func processStore() (*Store, error) {
	process.once.Do(func() {
		if _, err := ModulePath(); err != nil {
			process.err = err
			return
		}
		dir, err := os.MkdirTemp("", "mp-hsm-softhsm-")
		if err != nil {
			process.err = fmt.Errorf("softhsm: %w", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if process.store, process.err = openStore(dir); process.err != nil {
			os.RemoveAll(dir)
			return
		}
		process.dir = dir
	})
	return process.store, process.err
}

// Main runs the tests of a package that uses New, then removes the process
// store, and returns the exit code for os.Exit. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(softhsm.Main(m)) }
//
// Without it, the store is left behind in the temporary directory.
func Main(m *testing.M) int {
	process.main.Store(true)
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if process.dir != "" {
		if err := os.RemoveAll(process.dir); err != nil {
			fmt.Fprintf(os.Stderr, "softhsm: remove the test store: %v\n", err)
		}
		process.dir = ""
	}
	return code
}

// Options are the token settings for New. The zero value gives a token
// with a unique label and the default PINs.
type Options struct {
	// Label is the token label, at most 32 bytes. If empty, a label unique
	// in the process: "mp-hsm-test-N".
	Label string
	// PIN is the user PIN. If empty, DefaultPIN.
	PIN string
	// SOPIN is the security officer PIN. If empty, DefaultSOPIN.
	SOPIN string
}

// New initialises a new token in the process store and returns it; the
// store is created on first use (see the package documentation). The token
// lasts until Main removes the store. At most one Options may be given.
//
// When SoftHSM2 is not installed, New skips the test, unless the CI
// environment variable is non-empty: then the test fails, so that a CI job
// without SoftHSM2 cannot pass by skipping. Any other problem fails the
// test.
func New(t testing.TB, opts ...Options) *Token {
	t.Helper()
	var o Options
	switch len(opts) {
	case 0:
	case 1:
		o = opts[0]
	default:
		t.Fatalf("softhsm.New: at most one Options, got %d", len(opts))
	}
	tok, err := NewToken(o)
	if err != nil {
		if errors.Is(err, ErrNotInstalled) && os.Getenv("CI") == "" {
			t.Skipf("%v (with CI set, this fails the test)", err)
		}
		t.Fatal(err)
	}
	if !process.main.Load() {
		process.warnOnce.Do(func() {
			t.Logf("softhsm: TestMain does not call softhsm.Main, so the store %s will be left behind", tok.store.Dir)
		})
	}
	return tok
}

// NewToken is New for code without a testing.TB, such as an Example: it
// returns the error (ErrNotInstalled without SoftHSM2) instead of failing
// or skipping a test.
func NewToken(o Options) (*Token, error) {
	s, err := processStore()
	if err != nil {
		return nil, err
	}
	if o.Label == "" {
		o.Label = fmt.Sprintf("mp-hsm-test-%d", process.labels.Add(1))
	}
	if o.PIN == "" {
		o.PIN = DefaultPIN
	}
	if o.SOPIN == "" {
		o.SOPIN = DefaultSOPIN
	}
	return s.InitToken(o.Label, o.PIN, o.SOPIN)
}

// GenerateRSA is GenerateRSAKey for tests: it fails t on error.
func (tok *Token) GenerateRSA(t testing.TB, bits int, o KeyOptions) *rsa.PublicKey {
	t.Helper()
	pub, err := tok.GenerateRSAKey(bits, o)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// GenerateEC is GenerateECKey for tests: it fails t on error.
func (tok *Token) GenerateEC(t testing.TB, curve elliptic.Curve, o KeyOptions) *ecdsa.PublicKey {
	t.Helper()
	pub, err := tok.GenerateECKey(curve, o)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// WriteCertificate is PutCertificate for tests: it fails t on error.
func (tok *Token) WriteCertificate(t testing.TB, cert *x509.Certificate, id []byte, label string) {
	t.Helper()
	if err := tok.PutCertificate(cert, id, label); err != nil {
		t.Fatal(err)
	}
}

// NewWithKey does the usual setup in one call: a new token (as New) with
// an RSA 2048 key pair described by o, a leaf certificate for it issued by
// ca as described by leaf, and the intermediate. The leaf has the key's
// CKA_ID (o.ID, or KeyID of the key) and o.Label; the intermediate has its
// SubjectKeyId as CKA_ID and its common name as label.
func NewWithKey(t testing.TB, ca *CA, o KeyOptions, leaf LeafOptions) (*Token, *x509.Certificate) {
	t.Helper()
	tok := New(t)
	return tok, tok.certify(t, ca, tok.GenerateRSA(t, 2048, o), o, leaf)
}

// NewWithECKey is NewWithKey with an ECDSA key on curve.
func NewWithECKey(t testing.TB, ca *CA, curve elliptic.Curve, o KeyOptions, leaf LeafOptions) (*Token, *x509.Certificate) {
	t.Helper()
	tok := New(t)
	return tok, tok.certify(t, ca, tok.GenerateEC(t, curve, o), o, leaf)
}

// certify issues a leaf for pub and writes it and the intermediate.
func (tok *Token) certify(t testing.TB, ca *CA, pub crypto.PublicKey, o KeyOptions, leaf LeafOptions) *x509.Certificate {
	t.Helper()
	cert, err := ca.IssueLeaf(pub, leaf)
	if err != nil {
		t.Fatal(err)
	}
	// An empty o.ID made the key's CKA_ID KeyID(pub), which IssueLeaf also
	// put in SubjectKeyId; PutCertificate falls back to it.
	tok.WriteCertificate(t, cert, o.ID, o.Label)
	tok.WriteCertificate(t, ca.Intermediate, ca.Intermediate.SubjectKeyId, ca.Intermediate.Subject.CommonName)
	return cert
}
