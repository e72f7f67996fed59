package doctor_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
)

// The doctor's tests need no token and no PKCS#11: a key in memory, a test PKI
// named as Buypass's, and the Maskinporten emulator.

const (
	testClient = "doctor-client"
	testScope  = "test:doctor"
	testOrg    = "910000004" // a valid organisation number
)

var testKeys struct {
	once                   sync.Once
	root, inter, leaf, alt *rsa.PrivateKey
}

// keys returns RSA keys made once for the package: the CAs', the leaf's,
// and another.
func keys(t testing.TB) (root, inter, leaf, alt *rsa.PrivateKey) {
	t.Helper()
	k := &testKeys
	k.once.Do(func() {
		for _, p := range []**rsa.PrivateKey{&k.root, &k.inter, &k.leaf, &k.alt} {
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			*p = key
		}
	})
	return k.root, k.inter, k.leaf, k.alt
}

// testPKI is a root and an issuing CA with Buypass's test names.
type testPKI struct {
	root, inter *x509.Certificate
	interKey    crypto.Signer
}

func newPKI(t testing.TB, interCN string) *testPKI {
	t.Helper()
	rootKey, interKey, _, _ := keys(t)
	now := time.Now()
	root := makeCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "Buypass Class 3 Test4 Root CA G2 HT"}, NotBefore: now.AddDate(-3, 0, 0), NotAfter: now.AddDate(20, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, nil, rootKey.Public(), rootKey)
	inter := makeCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: interCN}, NotBefore: now.AddDate(-2, 0, 0), NotAfter: now.AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, root, interKey.Public(), rootKey)
	return &testPKI{root: root, inter: inter, interKey: interKey}
}

// leafOpts describe a leaf certificate; the zero value is an
// authentication certificate of testOrg, valid from an hour ago for a year.
type leafOpts struct {
	org                 string // "-" for none
	usage               x509.KeyUsage
	notBefore, notAfter time.Time
}

func (p *testPKI) leaf(t testing.TB, pub crypto.PublicKey, o leafOpts) *x509.Certificate {
	t.Helper()
	if o.org == "" {
		o.org = testOrg
	}
	if o.usage == 0 {
		o.usage = x509.KeyUsageDigitalSignature
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = o.notBefore.AddDate(1, 0, 0)
	}
	name := pkix.Name{CommonName: "DOCTOR TEST AS", Country: []string{"NO"}}
	if o.org != "-" {
		name.SerialNumber = o.org
		name.ExtraNames = []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 97}, Value: "NTRNO-" + o.org}}
	}
	return makeCert(t, &x509.Certificate{Subject: name, NotBefore: o.notBefore, NotAfter: o.notAfter, KeyUsage: o.usage}, p.inter, pub, p.interKey)
}

func makeCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// setup returns a signer over the leaf key with a test certificate as o
// describes, and an emulator that trusts the PKI and knows the client.
func setup(t *testing.T, o leafOpts) (*signer.FileSigner, *emulator.Server) {
	t.Helper()
	_, _, leafKey, _ := keys(t)
	pki := newPKI(t, "Buypass Class 3 Test4 CA G2 HT Business")
	s, err := signer.NewFileSigner(leafKey, []*x509.Certificate{pki.leaf(t, leafKey.Public(), o), pki.inter})
	if err != nil {
		t.Fatal(err)
	}
	srv := emulator.NewTest(t, emulator.Config{
		Roots:   []*x509.Certificate{pki.root},
		Clients: []emulator.Client{{ID: testClient, OrgNumber: testOrg, Scopes: []string{testScope}, Keys: map[string]crypto.PublicKey{"kid-1": leafKey.Public()}}},
	})
	return s, srv
}

// byCheck returns the result of check, failing t when there is none.
func byCheck(t *testing.T, rs doctor.Results, check string) doctor.Result {
	t.Helper()
	for _, r := range rs {
		if r.Check == check {
			return r
		}
	}
	t.Fatalf("no result for check %s in %+v", check, rs)
	return doctor.Result{}
}

// want fails t unless the result of check has status and class.
func want(t *testing.T, rs doctor.Results, check string, status doctor.Status, class doctor.Class) doctor.Result {
	t.Helper()
	r := byCheck(t, rs, check)
	if r.Status != status || r.Class != class {
		t.Errorf("check %s: status %s class %d, want %s class %d: %s (hint %q)", check, r.Status, r.Class, status, class, r.Message, r.Hint)
	}
	return r
}

// fakeFinder is a KeyFinder that reports given results and finds a given
// key.
type fakeFinder struct {
	results []doctor.Result
	found   doctor.FoundKey
	closed  int
}

func (f *fakeFinder) FindKey(_ context.Context, report func(doctor.Result)) doctor.FoundKey {
	for _, r := range f.results {
		report(r)
	}
	return f.found
}

func (f *fakeFinder) Close() error { f.closed++; return nil }
