package grant

import (
	"context"
	"crypto"
	"crypto/x509"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
)

func TestTokenSourceOneRequestForManyCallers(t *testing.T) {
	srv := newEmulator(t, nil)
	srv.SetLatency(50 * time.Millisecond)
	cfg := testConfig(t, srv, 0)
	var wg sync.WaitGroup
	var failed atomic.Int64
	tokens := make([]string, 1000)
	start := make(chan struct{})
	shared := cfg.TokenSource(context.Background(), Request{Scopes: []string{"test:read", "test:write"}})
	for i := range tokens {
		wg.Go(func() {
			<-start
			tok, err := shared.Token()
			if err != nil {
				failed.Add(1)
				return
			}
			tokens[i] = tok.AccessToken
		})
	}
	close(start)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d callers failed", failed.Load())
	}
	if st := srv.Stats(); st.TokenRequests != 1 {
		t.Errorf("TokenRequests = %d, want 1", st.TokenRequests)
	}
	for _, tok := range tokens {
		if tok != tokens[0] {
			t.Fatal("callers got different tokens")
		}
	}
}

func TestTokenSourceRefreshesAfterMargin(t *testing.T) {
	clk := newFakeClock()
	srv := newEmulator(t, clk) // tokens live 120 s
	cfg := testConfig(t, srv, 0)
	cfg.now = clk.Now
	ts := &source{ctx: context.Background(), cfg: cfg, req: testReq} // the reuse's clock is real
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(89 * time.Second) // refresh is due at 120 - 30 = 90 s
	if tok, _ := ts.Token(); tok != first {
		t.Fatal("token replaced before the margin")
	}
	clk.Advance(2 * time.Second)
	second, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if second.AccessToken == first.AccessToken {
		t.Fatal("token not replaced after the margin")
	}
	if n := srv.Stats().TokenRequests; n != 2 {
		t.Errorf("TokenRequests = %d, want 2", n)
	}
}

func TestTokenSourceShortTokenRefreshedHalfway(t *testing.T) {
	clk := newFakeClock()
	p := thePKI(t)
	srv := emulator.NewTest(t, emulator.Config{
		Roots:         []*x509.Certificate{p.root},
		Clients:       []emulator.Client{{ID: testClient, OrgNumber: testOrg, Scopes: []string{"test:read"}}},
		TokenLifetime: 40 * time.Second,
		Now:           clk.Now,
		Logf:          func(string, ...any) {},
	})
	cfg := testConfig(t, srv, 0)
	cfg.now = clk.Now
	ts := &source{ctx: context.Background(), cfg: cfg, req: testReq}
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(19 * time.Second)
	if tok, _ := ts.Token(); tok != first {
		t.Fatal("replaced before half the lifetime")
	}
	clk.Advance(2 * time.Second)
	if tok, _ := ts.Token(); tok == first {
		t.Fatal("not replaced after half the lifetime")
	}
}

func TestTokenSourceKeepsValidTokenWhenRefreshFails(t *testing.T) {
	clk := newFakeClock()
	srv := newEmulator(t, clk)
	cfg := testConfig(t, srv, 0)
	cfg.now = clk.Now
	ts := &source{ctx: context.Background(), cfg: cfg, req: testReq}
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(100 * time.Second) // in the margin, still valid
	srv.FailNext(3, http.StatusServiceUnavailable)
	if tok, err := ts.Token(); err != nil || tok.AccessToken != first.AccessToken {
		t.Fatalf("Token = %v, %v; want the cached token", tok, err)
	}
	// No new attempt within the failure backoff.
	if tok, err := ts.Token(); err != nil || tok.AccessToken != first.AccessToken || srv.Stats().TokenRequests != 4 {
		t.Fatalf("second call: %v, %d requests", err, srv.Stats().TokenRequests)
	}
	clk.Advance(6 * time.Second)
	if tok, err := ts.Token(); err != nil || tok.AccessToken == first.AccessToken {
		t.Fatalf("after the backoff: %v, same token %v", err, tok.AccessToken == first.AccessToken)
	}
}

// rotatingSigner is a signer whose key and certificate can be replaced, as
// when a card is swapped or a certificate renewed.
type rotatingSigner struct {
	cur atomic.Pointer[signer.FileSigner]
}

func (r *rotatingSigner) Public() crypto.PublicKey { return r.cur.Load().Public() }
func (r *rotatingSigner) Sign(rand io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return r.cur.Load().Sign(rand, d, o)
}
func (r *rotatingSigner) Chain() []*x509.Certificate { return r.cur.Load().Chain() }

func TestTokenSourceKeyRotation(t *testing.T) {
	srv := newEmulator(t, nil)
	p := thePKI(t)

	// A new Config with a new certificate gets a new token at once.
	a := testConfig(t, srv, 0)
	b := testConfig(t, srv, 1)
	ta, err := a.TokenSource(context.Background(), testReq).Token()
	if err != nil {
		t.Fatal(err)
	}
	tb, err := b.TokenSource(context.Background(), testReq).Token()
	if err != nil {
		t.Fatal(err)
	}
	if ta.AccessToken == tb.AccessToken || srv.Stats().TokenRequests != 2 {
		t.Fatalf("new certificate served the old token (%d requests)", srv.Stats().TokenRequests)
	}

	// A long-lived Source notices when its signer's certificate changes.
	rs := &rotatingSigner{}
	rs.cur.Store(p.x5cSigner(t, 0))
	cfg := testConfig(t, srv, 0)
	cfg.Signer = rs
	ts := cfg.TokenSource(context.Background(), testReq)
	t1, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	rs.cur.Store(p.x5cSigner(t, 1))
	t2, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if t1.AccessToken == t2.AccessToken {
		t.Fatal("rotated key served the old token")
	}
}

// TestTokenSourceShortTokenNotFetchedPerCall: a token that lives less
// than refreshMargin is due for the reuse at once; the source under it
// still hands it out until half its life is gone.
func TestTokenSourceShortTokenNotFetchedPerCall(t *testing.T) {
	p := thePKI(t)
	srv := emulator.NewTest(t, emulator.Config{
		Roots:         []*x509.Certificate{p.root},
		Clients:       []emulator.Client{{ID: testClient, OrgNumber: testOrg, Scopes: []string{"test:read"}}},
		TokenLifetime: 20 * time.Second,
		Logf:          func(string, ...any) {},
	})
	ts := testConfig(t, srv, 0).TokenSource(context.Background(), testReq)
	for range 3 {
		if _, err := ts.Token(); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.Stats().TokenRequests; n != 1 {
		t.Errorf("TokenRequests = %d, want 1", n)
	}
}

func TestInvalidate(t *testing.T) {
	srv := newEmulator(t, nil)
	ts := testConfig(t, srv, 0).reuse(context.Background(), testReq, false)
	t1, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	ts.invalidate(t1)
	t2, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if t1.AccessToken == t2.AccessToken || srv.Stats().TokenRequests != 2 {
		t.Error("Invalidate did not drop the token")
	}
}

func TestCachedTokenDoesNotAllocate(t *testing.T) {
	srv := newEmulator(t, nil)
	ts := testConfig(t, srv, 0).TokenSource(context.Background(), testReq)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { ts.Token() }); n != 0 {
		t.Errorf("Token allocates %v times per call, want 0", n)
	}
}
