package signer

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	mathrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// Test keys are generated, never committed. RSA keys are slow to make, so
// each index is made once per test binary and shared.
var (
	rsaKeysMu sync.Mutex
	rsaKeys   = map[int]*rsa.PrivateKey{}
)

// testRSAKey returns the 2048-bit RSA test key number i.
func testRSAKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaKeysMu.Lock()
	defer rsaKeysMu.Unlock()
	if k, ok := rsaKeys[i]; ok {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaKeys[i] = k
	return k
}

func testECKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// certOpts describes a test certificate. Zero times mean an hour ago and a
// year from now.
type certOpts struct {
	cn                  string
	ca                  bool
	notBefore, notAfter time.Time
	sigAlg              x509.SignatureAlgorithm
}

func testName(cn string) pkix.Name {
	return pkix.Name{CommonName: cn, Organization: []string{"mp-hsm test"}}
}

// issue makes a certificate for pub, signed by parentKey. A nil parent makes
// it self-signed; parentKey must then be the key of pub.
func issue(t testing.TB, o certOpts, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().AddDate(1, 0, 0)
	}
	tpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               testName(o.cn),
		NotBefore:             o.notBefore,
		NotAfter:              o.notAfter,
		BasicConstraintsValid: true,
		IsCA:                  o.ca,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		SignatureAlgorithm:    o.sigAlg,
	}
	if o.ca {
		tpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if parent == nil {
		parent = tpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// testPKI is root -> intermediate -> leaf, with the leaf on RSA test key 0.
type testPKI struct {
	rootKey, interKey *ecdsa.PrivateKey
	leafKey           *rsa.PrivateKey
	root, inter, leaf *x509.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{
		rootKey:  testECKey(t, elliptic.P384()),
		interKey: testECKey(t, elliptic.P256()),
		leafKey:  testRSAKey(t, 0),
	}
	p.root = issue(t, certOpts{cn: "Test Root CA", ca: true}, p.rootKey.Public(), nil, p.rootKey)
	p.inter = issue(t, certOpts{cn: "Test Class 3 CA", ca: true}, p.interKey.Public(), p.root, p.rootKey)
	p.leaf = issue(t, certOpts{cn: "TEST VIRKSOMHET AS"}, p.leafKey.Public(), p.inter, p.interKey)
	return p
}

func shuffled(certs ...*x509.Certificate) []*x509.Certificate {
	out := append([]*x509.Certificate(nil), certs...)
	mathrand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func names(chain []*x509.Certificate) string {
	var s []string
	for _, c := range chain {
		s = append(s, c.Subject.CommonName+"/"+c.SerialNumber.Text(16))
	}
	return "[" + strings.Join(s, " ") + "]"
}

func sameChain(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Raw, b[i].Raw) {
			return false
		}
	}
	return true
}

func TestBuildChain(t *testing.T) {
	p := newTestPKI(t)

	// Decoys: same subjects as the real certificates, other keys.
	otherRoot := testECKey(t, elliptic.P256())
	otherInter := testECKey(t, elliptic.P256())
	decoyRoot := issue(t, certOpts{cn: "Test Root CA", ca: true}, otherRoot.Public(), nil, otherRoot)
	decoyInter := issue(t, certOpts{cn: "Test Class 3 CA", ca: true}, otherInter.Public(), decoyRoot, otherRoot)
	decoyLeaf := issue(t, certOpts{cn: "TEST VIRKSOMHET AS"}, testRSAKey(t, 1).Public(), decoyInter, otherInter)
	// Same subject and key as the intermediate, but not a CA.
	notCA := issue(t, certOpts{cn: "Test Class 3 CA"}, p.interKey.Public(), p.root, p.rootKey)

	want := []*x509.Certificate{p.leaf, p.inter}
	for range 20 {
		pool := shuffled(p.root, p.inter, p.leaf, decoyRoot, decoyInter, decoyLeaf, notCA)
		got, err := BuildChain(p.leafKey.Public(), pool, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !sameChain(got, want) {
			t.Fatalf("BuildChain(shuffled pool %s) = %s, want %s", names(pool), names(got), names(want))
		}
	}

	t.Run("split between pool and extra", func(t *testing.T) {
		got, err := BuildChain(p.leafKey.Public(), []*x509.Certificate{p.leaf, decoyInter}, []*x509.Certificate{p.root, decoyRoot, p.inter})
		if err != nil || !sameChain(got, want) {
			t.Errorf("BuildChain = %s, %v; want %s", names(got), err, names(want))
		}
	})
	t.Run("no issuers", func(t *testing.T) {
		got, err := BuildChain(p.leafKey.Public(), []*x509.Certificate{p.leaf, decoyInter}, nil)
		if err != nil || !sameChain(got, want[:1]) {
			t.Errorf("BuildChain = %s, %v; want %s", names(got), err, names(want[:1]))
		}
	})
	t.Run("no leaf", func(t *testing.T) {
		got, err := BuildChain(testRSAKey(t, 2).Public(), []*x509.Certificate{p.root, p.inter, p.leaf, decoyLeaf}, nil)
		if err != nil || got != nil {
			t.Errorf("BuildChain = %s, %v; want nil, nil", names(got), err)
		}
	})
	t.Run("empty pool", func(t *testing.T) {
		got, err := BuildChain(p.leafKey.Public(), nil, nil)
		if err != nil || got != nil {
			t.Errorf("BuildChain = %s, %v; want nil, nil", names(got), err)
		}
	})
	t.Run("self-signed leaf", func(t *testing.T) {
		k := testECKey(t, elliptic.P256())
		self := issue(t, certOpts{cn: "dev"}, k.Public(), nil, k)
		got, err := BuildChain(k.Public(), []*x509.Certificate{p.root, self, p.inter}, nil)
		if err != nil || !sameChain(got, []*x509.Certificate{self}) {
			t.Errorf("BuildChain = %s, %v; want [dev]", names(got), err)
		}
	})
	t.Run("unsupported key", func(t *testing.T) {
		_, err := BuildChain(struct{}{}, []*x509.Certificate{p.leaf}, nil)
		if !errors.Is(err, ErrUnsupportedKey) {
			t.Errorf("err = %v, want ErrUnsupportedKey", err)
		}
	})
}

func TestBuildChainPrefersValidLatest(t *testing.T) {
	p := newTestPKI(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	leaf := func(cn string, from, to time.Time) *x509.Certificate {
		return issue(t, certOpts{cn: cn, notBefore: from, notAfter: to}, p.leafKey.Public(), p.inter, p.interKey)
	}
	expired := leaf("expired", now.AddDate(-2, 0, 0), now.AddDate(0, 0, -1))
	valid1 := leaf("valid1", now.AddDate(-1, 0, 0), now.AddDate(0, 6, 0))
	valid2 := leaf("valid2", now.AddDate(0, -1, 0), now.AddDate(1, 0, 0))
	future := leaf("future", now.AddDate(0, 0, 1), now.AddDate(3, 0, 0))

	// The intermediate, renewed with the same key.
	interOld := issue(t, certOpts{cn: "Test Class 3 CA", ca: true, notBefore: now.AddDate(-5, 0, 0), notAfter: now.AddDate(-1, 0, 0)}, p.interKey.Public(), p.root, p.rootKey)
	interNew := issue(t, certOpts{cn: "Test Class 3 CA", ca: true, notBefore: now.AddDate(-1, 0, 0), notAfter: now.AddDate(5, 0, 0)}, p.interKey.Public(), p.root, p.rootKey)

	tests := []struct {
		name   string
		leaves []*x509.Certificate
		want   *x509.Certificate
	}{
		{"valid with latest NotAfter", []*x509.Certificate{expired, valid1, valid2, future}, valid2},
		{"valid beats later NotAfter", []*x509.Certificate{future, valid1, expired}, valid1},
		{"none valid: latest NotAfter", []*x509.Certificate{expired, future}, future},
		{"only expired", []*x509.Certificate{expired}, expired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := shuffled(append(tt.leaves, interOld, interNew, p.root)...)
			got, err := buildChain(now, p.leafKey.Public(), pool, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := []*x509.Certificate{tt.want, interNew}
			if !sameChain(got, want) {
				t.Errorf("buildChain = %s, want %s", names(got), names(want))
			}
		})
	}
}

func TestBuildChainLongAndLoops(t *testing.T) {
	// root -> a -> (SHA-1) b -> leaf: the SHA-1 link is followed.
	rootKey := testECKey(t, elliptic.P256())
	aKey := testRSAKey(t, 1)
	bKey := testECKey(t, elliptic.P256())
	leafKey := testECKey(t, elliptic.P384())
	root := issue(t, certOpts{cn: "root", ca: true}, rootKey.Public(), nil, rootKey)
	a := issue(t, certOpts{cn: "a", ca: true}, aKey.Public(), root, rootKey)
	b := issue(t, certOpts{cn: "b", ca: true, sigAlg: x509.SHA1WithRSA}, bKey.Public(), a, aKey)
	leaf := issue(t, certOpts{cn: "leaf"}, leafKey.Public(), b, bKey)
	if err := b.CheckSignatureFrom(a); !errors.As(err, new(x509.InsecureAlgorithmError)) {
		t.Fatalf("precondition: CheckSignatureFrom = %v, want InsecureAlgorithmError", err)
	}
	got, err := BuildChain(leafKey.Public(), shuffled(root, a, b, leaf), nil)
	if want := []*x509.Certificate{leaf, b, a}; err != nil || !sameChain(got, want) {
		t.Errorf("BuildChain = %s, %v; want %s", names(got), err, names(want))
	}

	// x and y certify each other; the chain must end.
	xKey := testECKey(t, elliptic.P256())
	yKey := testECKey(t, elliptic.P256())
	xTpl := &x509.Certificate{Subject: testName("x")}
	yTpl := &x509.Certificate{Subject: testName("y")}
	xByY := issue(t, certOpts{cn: "x", ca: true}, xKey.Public(), yTpl, yKey)
	yByX := issue(t, certOpts{cn: "y", ca: true}, yKey.Public(), xTpl, xKey)
	leaf2 := issue(t, certOpts{cn: "leaf2"}, leafKey.Public(), xByY, xKey)
	got, err = BuildChain(leafKey.Public(), []*x509.Certificate{yByX, xByY, leaf2}, nil)
	if want := []*x509.Certificate{leaf2, xByY, yByX}; err != nil || !sameChain(got, want) {
		t.Errorf("cross-certified: BuildChain = %s, %v; want %s", names(got), err, names(want))
	}
}

func TestReadCertificates(t *testing.T) {
	p := newTestPKI(t)
	pemOf := func(certs ...*x509.Certificate) []byte {
		var b bytes.Buffer
		for _, c := range certs {
			pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		return b.Bytes()
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(testECKey(t, elliptic.P256()))
	if err != nil {
		t.Fatal(err)
	}
	// As "openssl pkcs12 -nodes" writes it: attributes as text, a key, certificates.
	var opensslOut bytes.Buffer
	opensslOut.WriteString("Bag Attributes\n    localKeyID: 01 02\nKey Attributes: <No Attributes>\n")
	pem.Encode(&opensslOut, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	opensslOut.WriteString("Bag Attributes\n    friendlyName: x\nsubject=CN = TEST VIRKSOMHET AS\n")
	opensslOut.Write(pemOf(p.leaf, p.inter))

	tests := []struct {
		name    string
		in      []byte
		want    []*x509.Certificate
		wantErr string
	}{
		{"PEM bundle", pemOf(p.inter, p.leaf, p.root), []*x509.Certificate{p.inter, p.leaf, p.root}, ""},
		{"one DER", p.leaf.Raw, []*x509.Certificate{p.leaf}, ""},
		{"openssl output", opensslOut.Bytes(), []*x509.Certificate{p.leaf, p.inter}, ""},
		{"empty", []byte(" \n"), nil, "empty input"},
		{"garbage", []byte("not a certificate"), nil, "neither PEM nor a DER certificate"},
		{"two DER", append(append([]byte(nil), p.leaf.Raw...), p.inter.Raw...), nil, "neither PEM nor a DER certificate"},
		{"PEM without certificates", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil, "no CERTIFICATE block"},
		{"corrupt certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), nil, "reading certificate 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadCertificates(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadCertificates = %s, %v; want error containing %q", names(got), err, tt.wantErr)
				}
				return
			}
			if err != nil || !sameChain(got, tt.want) {
				t.Fatalf("ReadCertificates = %s, %v; want %s", names(got), err, names(tt.want))
			}
		})
	}
}
