package emulator_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
)

// t0 is the emulator's clock in most tests.
var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// The organisations of the tests.
const (
	orgA        = "910000001" // owns client-a (x5c) and client-k (kid)
	orgOther    = "920000002" // has a certificate, no client
	orgDelegate = "930000003" // delegated to orgA in Altinn
	orgSysUser  = "940000004" // has a system user for client-a's system
)

// clock is a settable clock.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ns.Store(t.UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// RSA keys are slow to make, more so under -race: the tests share a few.
var (
	keysOnce sync.Once
	keys     [5]*rsa.PrivateKey
)

const (
	kRoot = iota
	kInter
	kLeaf
	kOther
	kServer
)

func key(i int) *rsa.PrivateKey {
	keysOnce.Do(func() {
		var wg sync.WaitGroup
		for i := range keys {
			wg.Go(func() {
				k, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					panic(err)
				}
				keys[i] = k
			})
		}
		wg.Wait()
	})
	return keys[i]
}

// pki is a tiny CA in the shape of Buypass and Commfides: a root, an
// issuing intermediate, and enterprise certificates below it.
type pki struct {
	root, inter *x509.Certificate
	leaf        *x509.Certificate // orgA, organizationIdentifier, valid
	leafSEID1   *x509.Certificate // orgA in subject serialNumber
	leafOther   *x509.Certificate // orgOther
	leafNoOrg   *x509.Certificate // no organisation number
	expired     *x509.Certificate // orgA, expired a year ago
	notYet      *x509.Certificate // orgA, valid from tomorrow
	strayRoot   *x509.Certificate // a root the emulator does not trust
	strayLeaf   *x509.Certificate // orgA, issued by strayRoot
}

var (
	pkiOnce sync.Once
	thePKI  *pki
)

var oidOrgID = asn1.ObjectIdentifier{2, 5, 4, 97}

func testPKI() *pki {
	pkiOnce.Do(func() {
		p := &pki{}
		p.root = mkCert(certSpec{cn: "Test Root CA", ca: true, key: key(kRoot)}, nil, nil)
		p.inter = mkCert(certSpec{cn: "Test Class 3 Test4 CA G2 ST Business", ca: true, key: key(kInter)}, p.root, key(kRoot))
		leaf := func(s certSpec) *x509.Certificate {
			if s.key == nil {
				s.key = key(kLeaf)
			}
			return mkCert(s, p.inter, key(kInter))
		}
		p.leaf = leaf(certSpec{cn: "ORG A", orgID: "NTRNO-" + orgA})
		p.leafSEID1 = leaf(certSpec{cn: "ORG A SEID1", serial: orgA})
		p.leafOther = leaf(certSpec{cn: "ORG OTHER", orgID: "NTRNO-" + orgOther})
		p.leafNoOrg = leaf(certSpec{cn: "NO ORG"})
		p.expired = leaf(certSpec{cn: "ORG A OLD", orgID: "NTRNO-" + orgA, from: t0.AddDate(-2, 0, 0), to: t0.AddDate(-1, 0, 0)})
		p.notYet = leaf(certSpec{cn: "ORG A NEW", orgID: "NTRNO-" + orgA, from: t0.AddDate(0, 0, 1), to: t0.AddDate(2, 0, 0)})
		p.strayRoot = mkCert(certSpec{cn: "Stray Root CA", ca: true, key: key(kOther)}, nil, nil)
		p.strayLeaf = mkCert(certSpec{cn: "ORG A STRAY", orgID: "NTRNO-" + orgA, key: key(kLeaf)}, p.strayRoot, key(kOther))
		thePKI = p
	})
	return thePKI
}

type certSpec struct {
	cn, orgID, serial string
	ca                bool
	key               *rsa.PrivateKey
	from, to          time.Time
}

var serialN atomic.Int64

func mkCert(s certSpec, parent *x509.Certificate, parentKey *rsa.PrivateKey) *x509.Certificate {
	if s.from.IsZero() {
		s.from, s.to = t0.AddDate(-1, 0, 0), t0.AddDate(5, 0, 0)
	}
	subj := pkix.Name{Country: []string{"NO"}, Organization: []string{s.cn}, CommonName: s.cn, SerialNumber: s.serial}
	if s.orgID != "" {
		subj.ExtraNames = append(subj.ExtraNames, pkix.AttributeTypeAndValue{Type: oidOrgID, Value: s.orgID})
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serialN.Add(1)),
		Subject:               subj,
		NotBefore:             s.from,
		NotAfter:              s.to,
		BasicConstraintsValid: true,
		IsCA:                  s.ca,
	}
	if s.ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if parent == nil {
		parent, parentKey = tmpl, s.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &s.key.PublicKey, parentKey)
	if err != nil {
		panic(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return c
}

func x5c(certs ...*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, base64.StdEncoding.EncodeToString(c.Raw))
	}
	return out
}

// env is an emulator with the test clients, on a settable clock.
type env struct {
	t     testing.TB
	srv   *emulator.Server
	clock *clock
	pki   *pki
}

func newEnv(t testing.TB, tweak ...func(*emulator.Config)) *env {
	t.Helper()
	p := testPKI()
	c := newClock(t0)
	cfg := emulator.Config{
		Roots: []*x509.Certificate{p.root},
		Clients: []emulator.Client{
			{
				ID:             "client-a",
				OrgNumber:      orgA,
				Scopes:         []string{"test:read", "test:write"},
				DelegatedBy:    []string{orgDelegate},
				SystemUserOrgs: []string{orgSysUser},
			},
			{
				ID:        "client-k",
				OrgNumber: orgA,
				Scopes:    []string{"test:read"},
				Keys:      map[string]crypto.PublicKey{"key-1": &key(kOther).PublicKey},
			},
		},
		Now: c.Now,
		Key: key(kServer),
	}
	for _, f := range tweak {
		f(&cfg)
	}
	return &env{t: t, srv: emulator.NewTest(t, cfg), clock: c, pki: p}
}

// spec is a grant before signing; the defaults are a valid x5c grant of
// client-a.
type spec struct {
	header jwt.MapClaims // merged into the header; a nil value deletes
	claims jwt.MapClaims // a nil value deletes
	method jwt.SigningMethod
	key    any
}

func (e *env) x5cGrant() *spec {
	now := e.clock.Now()
	return &spec{
		header: jwt.MapClaims{"x5c": x5c(e.pki.leaf, e.pki.inter)},
		claims: jwt.MapClaims{
			"aud":   e.srv.Issuer(),
			"iss":   "client-a",
			"iat":   now.Unix(),
			"exp":   now.Add(120 * time.Second).Unix(),
			"jti":   uuid.NewString(),
			"scope": "test:read",
		},
		method: jwt.SigningMethodRS256,
		key:    key(kLeaf),
	}
}

func (e *env) kidGrant() *spec {
	s := e.x5cGrant()
	s.header = jwt.MapClaims{"kid": "key-1", "x5c": nil}
	s.claims["iss"] = "client-k"
	s.key = key(kOther)
	return s
}

func (s *spec) sign(t testing.TB) string {
	t.Helper()
	claims := jwt.MapClaims{}
	for k, v := range s.claims {
		if v != nil {
			claims[k] = v
		}
	}
	tok := jwt.NewWithClaims(s.method, claims)
	for k, v := range s.header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	out, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatalf("signing the grant: %v", err)
	}
	return out
}

// answer is what the token endpoint said.
type answer struct {
	status int
	header http.Header
	raw    []byte

	Error       string `json:"error"`
	Description string `json:"error_description"`
	URI         string `json:"error_uri"`

	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
}

// code is the MP code, the last element of error_uri.
func (a *answer) code() string {
	if a.URI == "" {
		return ""
	}
	return path.Base(a.URI)
}

func form(assertion string) url.Values {
	return url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}}
}

func (e *env) post(assertion string) *answer {
	e.t.Helper()
	return e.do(http.MethodPost, "application/x-www-form-urlencoded", form(assertion).Encode())
}

func (e *env) do(method, contentType, body string) *answer {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.TokenURL(), strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s /token: %v", method, err)
	}
	defer resp.Body.Close()
	a := &answer{status: resp.StatusCode, header: resp.Header}
	if a.raw, err = io.ReadAll(resp.Body); err != nil {
		e.t.Fatalf("reading the answer: %v", err)
	}
	if len(a.raw) > 0 {
		if err := json.Unmarshal(a.raw, a); err != nil {
			e.t.Fatalf("answer %d is not JSON: %q", a.status, a.raw)
		}
	}
	return a
}

// mustIssue posts the grant and expects a token, whose verified claims it
// returns.
func (e *env) mustIssue(assertion string) (*answer, jwt.MapClaims) {
	e.t.Helper()
	a := e.post(assertion)
	if a.status != http.StatusOK {
		e.t.Fatalf("got %d %s %q (%s), want 200", a.status, a.Error, a.Description, a.code())
	}
	return a, e.verify(a.AccessToken)
}

// verify checks an access token with the server's public key.
func (e *env) verify(tok string) jwt.MapClaims {
	e.t.Helper()
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(e.clock.Now)).
		ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return e.srv.PublicKey(), nil })
	if err != nil {
		e.t.Fatalf("the token does not verify with PublicKey: %v", err)
	}
	return claims
}
