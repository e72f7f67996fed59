package daemon

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

var fileSigner struct {
	once sync.Once
	s    *signer.FileSigner
	err  error
}

// testSigner returns an in-memory key with a test-CA certificate: the
// store's tests need no token.
func testSigner(tb testing.TB) *signer.FileSigner {
	tb.Helper()
	fileSigner.once.Do(func() {
		ca, err := softhsm.NewCA(softhsm.EnvTest)
		if err != nil {
			fileSigner.err = err
			return
		}
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			fileSigner.err = err
			return
		}
		leaf, err := ca.IssueLeaf(key.Public(), softhsm.LeafOptions{})
		if err != nil {
			fileSigner.err = err
			return
		}
		fileSigner.s, fileSigner.err = signer.NewFileSigner(key, []*x509.Certificate{leaf, ca.Intermediate})
	})
	if fileSigner.err != nil {
		tb.Fatal(fileSigner.err)
	}
	return fileSigner.s
}

// newOfflineServer returns a ready Server whose Maskinporten is nowhere:
// for tests of the store and the handler that fill the cache themselves.
func newOfflineServer(tb testing.TB) *Server {
	tb.Helper()
	s := testSigner(tb)
	srv, err := New(Config{
		OpenSigner: func(context.Context) (signer.Signer, error) { return s, nil },
		Grant: grant.Config{ClientID: "offline", Environment: grant.Environment{
			Issuer: "http://127.0.0.1:9/", TokenEndpoint: "http://127.0.0.1:9/token"}},
		ProbeInterval: -1,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv
}

// fakeAccessToken is shaped like a Maskinporten access token: a JWT of
// about 1,100 characters, unique per i.
func fakeAccessToken(i int) string {
	claims := fmt.Sprintf(`{"aud":"https://api.example.no","scope":"example:scope/%d","iss":"https://maskinporten.no/","client_amr":"virksomhetssertifikat","token_type":"Bearer","exp":1900000000,"iat":1899999880,"client_id":"0e6f7a8b-1234-4cde-9f00-%012d","jti":"%043d","consumer":{"authority":"iso6523-actorid-upis","ID":"0192:910000004"}}`, i, i, i)
	enc := base64.RawURLEncoding
	sig := make([]byte, 256)
	return enc.EncodeToString([]byte(`{"kid":"bdvl4Ei7pV0bZCKRgSgmLo3w7HX9TmlhrDF2WtwR5Rs","alg":"RS256"}`)) + "." +
		enc.EncodeToString([]byte(claims)) + "." + enc.EncodeToString(sig)
}

// fill caches n tokens in s, each with its refresh timer, as n distinct
// requests would.
func fill(s *Server, n int) {
	now := time.Now()
	for i := range n {
		scope := fmt.Sprintf("example:scope/%d", i)
		key := "mp\x00" + scope + "\x00\x00\x00\x00"
		e := s.entryFor(key, grant.Request{Scopes: []string{scope}}, false, key)
		e.tok.Store(s.newToken(&grant.Token{AccessToken: fakeAccessToken(i), TokenType: "Bearer", Scope: scope,
			ExpiresIn: 120, Expiry: now.Add(120 * time.Second)}))
		e.mu.Lock()
		s.scheduleLocked(e, now)
		e.mu.Unlock()
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkHeap10000Keys reports the heap with 10,000 cached tokens
// (target: under 50 MiB): heap-MiB is the whole heap in use, store-MiB what
// the 10,000 entries, their tokens and timers add.
func BenchmarkHeap10000Keys(b *testing.B) {
	const n = 10000
	var total, added uint64
	for b.Loop() {
		s := newOfflineServer(b)
		before := heapInUse()
		fill(s, n)
		after := heapInUse()
		if s.store.len() != n {
			b.Fatalf("%d keys in the store", s.store.len())
		}
		total, added = after, after-before
		runtime.KeepAlive(s)
		s.Shutdown(context.Background())
	}
	b.ReportMetric(float64(total)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(added)/(1<<20), "store-MiB")
	b.ReportMetric(float64(added)/n, "B/key")
}

// BenchmarkHandlerCachedToken measures ServeHTTP answering from the cache,
// without a network: the daemon's own cost per request.
func BenchmarkHandlerCachedToken(b *testing.B) {
	s := newOfflineServer(b)
	fill(s, 1)
	body := "grant_type=client_credentials&scope=example%3Ascope%2F0"
	unix := &net.UnixAddr{Name: "/run/mp-hsm/mp-hsm.sock", Net: "unix"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, unix))
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatalf("%d %s", w.Code, w.Body)
			}
		}
	})
}

func TestStoreDropsUnusedKeys(t *testing.T) {
	s := newOfflineServer(t)
	now := time.Now()
	e := s.entryFor("k", grant.Request{Scopes: []string{"a"}}, false, "k")
	// A token issued two seconds ago that lives one second: expired, and
	// not asked for within two lifetimes.
	e.tok.Store(s.newToken(&grant.Token{AccessToken: "x", ExpiresIn: 1, Expiry: now.Add(-time.Second)}))
	e.lastUsed.Store(now.Add(-3 * time.Second).UnixNano())
	s.onTimer(e)
	if s.store.len() != 0 || !e.dead {
		t.Fatal("a key unused for two lifetimes was kept")
	}
	// Used recently: kept, and its timer set.
	e2 := s.entryFor("k2", grant.Request{Scopes: []string{"a"}}, false, "k2")
	e2.tok.Store(s.newToken(&grant.Token{AccessToken: "x", ExpiresIn: 1, Expiry: now.Add(-time.Second)}))
	s.onTimer(e2)
	if s.store.len() != 1 || e2.timer == nil {
		t.Fatal("a key used just now was dropped")
	}
}

func TestFreshnessRules(t *testing.T) {
	s := newOfflineServer(t)
	for _, l := range []time.Duration{3 * time.Second, 4 * time.Second, time.Minute, 120 * time.Second, 10 * time.Minute} {
		for range 20 {
			now := time.Now()
			tok := s.newToken(&grant.Token{AccessToken: "x", ExpiresIn: int(l / time.Second), Expiry: now.Add(l)})
			served := tok.expiry.Add(-minServe(l)) // served until then
			if !tok.refreshAt.Before(served) || !tok.refreshAt.After(now) {
				t.Fatalf("lifetime %s: refresh at +%s, served until +%s", l, tok.refreshAt.Sub(now), served.Sub(now))
			}
			if l >= time.Minute && tok.expiry.Sub(tok.refreshAt) > 40*time.Second {
				t.Fatalf("lifetime %s: refreshed %s early", l, tok.expiry.Sub(tok.refreshAt))
			}
		}
	}
	if got := appendJSONString(nil, "a\"\\\x01\nø😀"); string(got) != `"a\"\\\u0001\n\u00f8\ud83d\ude00"` {
		t.Fatalf("appendJSONString: %s", got)
	}
}
