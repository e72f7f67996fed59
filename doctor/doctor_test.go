package doctor_test

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

var checkNames = []string{"signature", "certificate", "validity", "key-usage", "issuer", "org-number",
	"environment", "metadata", "clock", "token-request"}

func TestRunAllGood(t *testing.T) {
	s, srv := setup(t, leafOpts{})
	var reported []string
	rs := doctor.Run(context.Background(), doctor.Config{
		Signer: s, WellKnown: srv.MetadataURL(), ClientID: testClient, Request: grant.Request{Scopes: []string{testScope}},
		Report: func(r doctor.Result) { reported = append(reported, r.Check) },
	})
	if len(rs) != len(checkNames) {
		t.Fatalf("%d results, want %d: %+v", len(rs), len(checkNames), rs)
	}
	for i, r := range rs {
		if r.Check != checkNames[i] || r.Status != doctor.OK || r.Class != doctor.ClassNone || r.Err != nil {
			t.Errorf("result %d: %+v, want %s ok", i, r, checkNames[i])
		}
		if strings.Contains(r.Message, "eyJ") {
			t.Errorf("check %s shows a grant or token: %s", r.Check, r.Message)
		}
	}
	if strings.Join(reported, " ") != strings.Join(checkNames, " ") {
		t.Errorf("Report saw %v", reported)
	}
	if rs.FirstFailure() != nil || rs.Count(doctor.OK) != len(checkNames) {
		t.Errorf("FirstFailure %v, %d ok", rs.FirstFailure(), rs.Count(doctor.OK))
	}
	want(t, rs, "org-number", doctor.OK, doctor.ClassNone)
	if r := byCheck(t, rs, "token-request"); !strings.Contains(r.Message, "not shown") {
		t.Errorf("token-request: %s", r.Message)
	}
	if r := byCheck(t, rs, "environment"); !strings.Contains(r.Message, "from the metadata at "+srv.MetadataURL()) {
		t.Errorf("environment: %s", r.Message)
	}
	if st := srv.Stats(); st.Issued != 1 {
		t.Errorf("the emulator issued %d tokens, want 1", st.Issued)
	}
}

func TestRunCertificate(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name   string
		leaf   leafOpts
		check  string
		status doctor.Status
		class  doctor.Class
		words  string
	}{
		{"expired", leafOpts{notBefore: now.AddDate(-1, 0, -2), notAfter: now.AddDate(0, 0, -2)}, "validity", doctor.Fail, doctor.ClassToken, "expired 2 days ago"},
		{"not yet valid", leafOpts{notBefore: now.Add(48 * time.Hour)}, "validity", doctor.Fail, doctor.ClassToken, "not yet valid"},
		{"expires soon", leafOpts{notBefore: now.AddDate(-1, 0, 0), notAfter: now.AddDate(0, 0, 30)}, "validity", doctor.Warn, doctor.ClassNone, "expires on"},
		{"signing key", leafOpts{usage: x509.KeyUsageContentCommitment}, "key-usage", doctor.Warn, doctor.ClassNone, "nonRepudiation only"},
		{"no signatures", leafOpts{usage: x509.KeyUsageKeyEncipherment}, "key-usage", doctor.Fail, doctor.ClassToken, "does not allow signatures"},
		{"no org number", leafOpts{org: "-"}, "org-number", doctor.Fail, doctor.ClassToken, "no organisation number"},
		{"wrong check digit", leafOpts{org: "910000005"}, "org-number", doctor.Warn, doctor.ClassNone, "wrong check digit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, srv := setup(t, tc.leaf)
			rs := doctor.Run(context.Background(), doctor.Config{Signer: s, WellKnown: srv.MetadataURL()})
			r := want(t, rs, tc.check, tc.status, tc.class)
			if !strings.Contains(r.Message, tc.words) || (tc.status != doctor.OK && r.Hint == "") {
				t.Errorf("%s: message %q lacks %q, or no hint (%q)", tc.check, r.Message, tc.words, r.Hint)
			}
		})
	}
}

// TestRunClock: the clock is a Config field, so a test can put the local
// clock off the server's.
func TestRunClock(t *testing.T) {
	for _, tc := range []struct {
		offset time.Duration
		status doctor.Status
		class  doctor.Class
		words  string
	}{
		{-60 * time.Second, doctor.Fail, doctor.ClassRefused, "60 s behind"},
		{60 * time.Second, doctor.Fail, doctor.ClassRefused, "60 s ahead of"},
		{-3500 * time.Millisecond, doctor.Warn, doctor.ClassNone, "behind"},
		{0, doctor.OK, doctor.ClassNone, "within 2 s"},
	} {
		s, srv := setup(t, leafOpts{})
		rs := doctor.Run(context.Background(), doctor.Config{Signer: s, WellKnown: srv.MetadataURL(),
			Now: func() time.Time { return time.Now().Add(tc.offset) }})
		r := want(t, rs, "clock", tc.status, tc.class)
		if !strings.Contains(r.Message, tc.words) {
			t.Errorf("offset %v: %q lacks %q", tc.offset, r.Message, tc.words)
		}
	}
}

func TestRunEnvironment(t *testing.T) {
	s, srv := setup(t, leafOpts{})
	prod := func(context.Context, []*x509.Certificate) (grant.Environment, string, error) {
		return grant.Prod, "the test's choice", nil
	}
	rs := doctor.Run(context.Background(), doctor.Config{Signer: s, Environment: prod, WellKnown: srv.MetadataURL()})
	r := want(t, rs, "environment", doctor.Fail, doctor.ClassToken)
	var me *grant.EnvironmentMismatchError
	if !errors.As(r.Err, &me) || me.CertificateEnvironment != "test" || !strings.Contains(r.Hint, "a test certificate works only in test") {
		t.Errorf("environment: err %v, hint %q", r.Err, r.Hint)
	}
	want(t, rs, "issuer", doctor.OK, doctor.ClassNone)

	boom := errors.New("no such environment")
	rs = doctor.Run(context.Background(), doctor.Config{Signer: s,
		Environment: func(context.Context, []*x509.Certificate) (grant.Environment, string, error) {
			return grant.Environment{}, "", boom
		}})
	if r := want(t, rs, "environment", doctor.Fail, doctor.ClassUsage); !errors.Is(r.Err, boom) {
		t.Errorf("environment: err %v, want the EnvironmentFunc's", r.Err)
	}
	want(t, rs, "metadata", doctor.Skip, doctor.ClassNone)
	want(t, rs, "token-request", doctor.Skip, doctor.ClassNone)
}

func TestRunMetadataDown(t *testing.T) {
	s, srv := setup(t, leafOpts{})
	url := srv.MetadataURL()
	srv.Close()
	rs := doctor.Run(context.Background(), doctor.Config{Signer: s, WellKnown: url, ClientID: testClient,
		Request: grant.Request{Scopes: []string{testScope}}, Timeout: 5 * time.Second})
	want(t, rs, "environment", doctor.Skip, doctor.ClassNone)
	if r := want(t, rs, "metadata", doctor.Fail, doctor.ClassUnavailable); !errors.Is(r.Err, grant.ErrUnavailable) || !strings.Contains(r.Message, url) {
		t.Errorf("metadata: err %v, message %q", r.Err, r.Message)
	}
	want(t, rs, "clock", doctor.Skip, doctor.ClassNone)
	want(t, rs, "token-request", doctor.Skip, doctor.ClassNone)
	if f := rs.FirstFailure(); f == nil || f.Check != "metadata" {
		t.Errorf("FirstFailure = %+v, want metadata", f)
	}
}

func TestRunTokenRequest(t *testing.T) {
	s, srv := setup(t, leafOpts{})
	run := func(cfg doctor.Config) doctor.Result {
		cfg.Signer, cfg.WellKnown, cfg.ClientID = s, srv.MetadataURL(), testClient
		return byCheck(t, doctor.Run(context.Background(), cfg), "token-request")
	}
	r := run(doctor.Config{Request: grant.Request{Scopes: []string{"test:not-registered"}}})
	var te *grant.TokenError
	if r.Status != doctor.Fail || r.Class != doctor.ClassRefused || !errors.As(r.Err, &te) || te.Code != "invalid_scope" ||
		!strings.Contains(r.Message, "HTTP 400 invalid_scope") || r.Hint == "" {
		t.Errorf("refused: %+v", r)
	}
	r = run(doctor.Config{Request: grant.Request{Scopes: []string{testScope}, PID: "12345678901"}})
	if r.Status != doctor.Fail || r.Class != doctor.ClassUsage || !errors.Is(r.Err, grant.ErrInvalidRequest) || strings.Contains(r.Message, "12345678901") {
		t.Errorf("bad pid: %+v", r)
	}
	mine := errors.New("--scope: mine")
	r = run(doctor.Config{Request: grant.Request{Scopes: []string{testScope}}, CheckRequest: func(grant.Request) error { return mine }})
	if r.Status != doctor.Fail || !errors.Is(r.Err, mine) || r.Message != "--scope: mine" {
		t.Errorf("CheckRequest: %+v", r)
	}
	if st := srv.Stats(); st.Issued != 0 {
		t.Errorf("the emulator issued %d tokens, want none", st.Issued)
	}
}

// TestRunKid: a key without a certificate, registered by kid.
func TestRunKid(t *testing.T) {
	_, srv := setup(t, leafOpts{})
	_, _, leafKey, _ := keys(t)
	s, err := signer.NewFileSigner(leafKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := doctor.Config{Signer: s, WellKnown: srv.MetadataURL(), ClientID: testClient, Request: grant.Request{Scopes: []string{testScope}}}
	rs := doctor.Run(context.Background(), cfg)
	want(t, rs, "certificate", doctor.Fail, doctor.ClassToken)
	if r := want(t, rs, "token-request", doctor.Fail, doctor.ClassToken); !strings.Contains(r.Message, "no x5c can be sent") {
		t.Errorf("token-request: %s", r.Message)
	}

	cfg.KeyID = "kid-1"
	rs = doctor.Run(context.Background(), cfg)
	want(t, rs, "certificate", doctor.OK, doctor.ClassNone)
	for _, c := range []string{"validity", "key-usage", "issuer", "org-number"} {
		if r := want(t, rs, c, doctor.Skip, doctor.ClassNone); !strings.Contains(r.Message, "identified by --kid") {
			t.Errorf("%s: %s", c, r.Message)
		}
	}
	want(t, rs, "token-request", doctor.OK, doctor.ClassNone)
}

// TestRunNothing: with no key and no environment every check says what it
// needs, and only the environment fails.
func TestRunNothing(t *testing.T) {
	rs := doctor.Run(context.Background(), doctor.Config{})
	if len(rs) != len(checkNames) {
		t.Fatalf("%d results: %+v", len(rs), rs)
	}
	for _, r := range rs {
		wantStatus := doctor.Skip
		if r.Check == "environment" {
			wantStatus = doctor.Fail
		}
		if r.Status != wantStatus || r.Message == "" {
			t.Errorf("%s: %s %q, want %s", r.Check, r.Status, r.Message, wantStatus)
		}
	}
	want(t, rs, "environment", doctor.Fail, doctor.ClassUsage)
}

// TestRunKeyFinder: Run reports the finder's results first, as they are
// but on one line each, judges what it found, and closes it.
func TestRunKeyFinder(t *testing.T) {
	_, _, leafKey, altKey := keys(t)
	pki := newPKI(t, "Buypass Class 3 Test4 CA G2 HT Business")
	f := &fakeFinder{
		results: []doctor.Result{
			{Check: "module", Status: doctor.OK, Message: "fake"},
			{Check: "key", Status: doctor.Fail, Message: "two\nlines"}, // no class
		},
		// The key is not the certificate's.
		found: doctor.FoundKey{Key: altKey, Chain: []*x509.Certificate{pki.leaf(t, leafKey.Public(), leafOpts{}), pki.inter}},
	}
	rs := doctor.Run(context.Background(), doctor.Config{Key: f})
	if f.closed != 1 {
		t.Errorf("Close called %d times, want 1", f.closed)
	}
	if len(rs) != 2+len(checkNames) || rs[0].Check != "module" || rs[1].Check != "key" {
		t.Fatalf("results %+v", rs)
	}
	if r := rs[1]; r.Message != "two; lines" || r.Class != doctor.ClassInternal {
		t.Errorf("a failure without class: %+v, want one line and ClassInternal", r)
	}
	want(t, rs, "signature", doctor.Fail, doctor.ClassToken)
	if r := want(t, rs, "certificate", doctor.Fail, doctor.ClassToken); !errors.Is(r.Err, signer.ErrCertificateMismatch) {
		t.Errorf("certificate: err %v", r.Err)
	}
	want(t, rs, "validity", doctor.OK, doctor.ClassNone)
	if f := rs.FirstFailure(); f == nil || f.Check != "key" || rs.Count(doctor.Fail) != 4 {
		t.Errorf("FirstFailure %+v, %d failed", f, rs.Count(doctor.Fail))
	}
}

func TestClassOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want doctor.Class
	}{
		{nil, doctor.ClassNone},
		{errors.New("other"), doctor.ClassInternal},
		{&grant.ValidationError{Field: "scope"}, doctor.ClassUsage},
		{&grant.ConfigError{Field: "ClientID"}, doctor.ClassUsage},
		{&grant.EnvironmentMismatchError{Environment: "prod", CertificateEnvironment: "test"}, doctor.ClassToken},
		{&grant.TokenError{StatusCode: 400}, doctor.ClassRefused},
		{&grant.TokenError{StatusCode: 503}, doctor.ClassUnavailable},
		{context.DeadlineExceeded, doctor.ClassUnavailable},
		{signer.ErrKeyTooSmall, doctor.ClassToken},
	} {
		if got := doctor.ClassOf(tc.err, doctor.ClassInternal); got != tc.want {
			t.Errorf("ClassOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
