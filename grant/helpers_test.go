package grant

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
)

const (
	testOrg    = "974760673" // Brønnøysundregistrene; check digit 3
	testClient = "mp-hsm-test-client"
	testKid    = "kid-1"
)

// testPKI is a tiny CA and two leaf keys of organisation testOrg.
type testPKI struct {
	root    *x509.Certificate
	rootKey *rsa.PrivateKey
	keys    [2]*rsa.PrivateKey
	leaves  [2]*x509.Certificate
}

var (
	pkiOnce sync.Once
	pki     testPKI
)

// thePKI returns the shared test PKI, made on first use (RSA key
// generation is slow).
func thePKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		var err error
		if pki.rootKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		notBefore := time.Now().Add(-time.Hour)
		rootTmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "mp-hsm Test Root CA", Organization: []string{"mp-hsm"}},
			NotBefore:             notBefore,
			NotAfter:              notBefore.Add(10 * 365 * 24 * time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &pki.rootKey.PublicKey, pki.rootKey)
		if err != nil {
			panic(err)
		}
		if pki.root, err = x509.ParseCertificate(der); err != nil {
			panic(err)
		}
		for i := range pki.keys {
			if pki.keys[i], err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
				panic(err)
			}
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(int64(100 + i)),
				Subject: pkix.Name{
					CommonName:   "MP-HSM TEST AS",
					Organization: []string{"MP-HSM TEST AS"},
					SerialNumber: testOrg,
					ExtraNames: []pkix.AttributeTypeAndValue{{
						Type:  asn1.ObjectIdentifier{2, 5, 4, 97},
						Value: "NTRNO-" + testOrg,
					}},
				},
				NotBefore: notBefore,
				NotAfter:  notBefore.Add(365 * 24 * time.Hour),
				KeyUsage:  x509.KeyUsageDigitalSignature,
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, pki.root, &pki.keys[i].PublicKey, pki.rootKey)
			if err != nil {
				panic(err)
			}
			if pki.leaves[i], err = x509.ParseCertificate(der); err != nil {
				panic(err)
			}
		}
	})
	return &pki
}

// x5cSigner returns a signer over leaf key i with the chain leaf, root.
func (p *testPKI) x5cSigner(t testing.TB, i int) *signer.FileSigner {
	t.Helper()
	s, err := signer.NewFileSigner(p.keys[i], []*x509.Certificate{p.leaves[i], p.root})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// kidSigner returns a signer over leaf key 0 without a chain.
func (p *testPKI) kidSigner(t testing.TB) *signer.FileSigner {
	t.Helper()
	s, err := signer.NewFileSigner(p.keys[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fakeClock is a settable clock shared by the Config and the emulator.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newEmulator starts an emulator that knows testClient with both an x5c
// registration (its organisation) and kid testKid, on clock clk (nil: real
// time).
func newEmulator(t testing.TB, clk *fakeClock) *emulator.Server {
	t.Helper()
	p := thePKI(t)
	cfg := emulator.Config{
		Roots: []*x509.Certificate{p.root},
		Clients: []emulator.Client{{
			ID:             testClient,
			OrgNumber:      testOrg,
			Scopes:         []string{"test:read", "test:write", "altinn:serviceowner"},
			Keys:           map[string]crypto.PublicKey{testKid: p.keys[0].Public()},
			DelegatedBy:    []string{"910000004"},
			SystemUserOrgs: []string{"910000004"},
		}},
		Logf: func(string, ...any) {},
	}
	if clk != nil {
		cfg.Now = clk.Now
	}
	return emulator.NewTest(t, cfg)
}

// emulatorEnv returns the environment of an emulator.
func emulatorEnv(s *emulator.Server) Environment {
	return Environment{Name: "emulator", Issuer: s.Issuer(), TokenEndpoint: s.TokenURL(), AltinnExchange: s.AltinnExchangeURL()}
}

// testConfig returns a Config for testClient against srv, signing with
// x5c key i.
func testConfig(t testing.TB, srv *emulator.Server, i int) *Config {
	t.Helper()
	return &Config{
		ClientID:    testClient,
		Signer:      thePKI(t).x5cSigner(t, i),
		Environment: emulatorEnv(srv),
		retryBase:   time.Millisecond,
	}
}

// counter is an httptest server that counts requests and answers with h.
type counter struct {
	*httptest.Server
	n atomic.Int64
}

func newCounter(t testing.TB, h http.HandlerFunc) *counter {
	t.Helper()
	c := &counter{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.n.Add(1)
		h(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *counter) Count() int { return int(c.n.Load()) }

// env returns an environment whose issuer and endpoints are the counter.
func (c *counter) env() Environment {
	return Environment{Issuer: c.URL + "/", TokenEndpoint: c.URL + "/token", AltinnExchange: c.URL + "/exchange"}
}

var testReq = Request{Scopes: []string{"test:read"}}

// fakeChainSigner is a signer whose leaf claims another issuer.
type fakeChainSigner struct {
	signer.Signer
	issuerCN string
}

func (f fakeChainSigner) Chain() []*x509.Certificate {
	leaf := *f.Signer.Chain()[0]
	leaf.Issuer = pkix.Name{CommonName: f.issuerCN}
	return []*x509.Certificate{&leaf}
}
