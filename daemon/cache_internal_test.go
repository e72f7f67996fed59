package daemon

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

var fileSigner struct {
	once sync.Once
	s    *signer.FileSigner
	err  error
}

// testSigner returns an in-memory key with a self-signed certificate: the
// cache's tests need no token, no CA and no cgo (their Maskinporten is a
// fake that checks nothing).
func testSigner(tb testing.TB) *signer.FileSigner {
	tb.Helper()
	fileSigner.once.Do(func() {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			fileSigner.err = err
			return
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "daemon cache test"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			fileSigner.err = err
			return
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			fileSigner.err = err
			return
		}
		fileSigner.s, fileSigner.err = signer.NewFileSigner(key, []*x509.Certificate{leaf})
	})
	if fileSigner.err != nil {
		tb.Fatal(fileSigner.err)
	}
	return fileSigner.s
}

// newOfflineServer returns a ready Server whose Maskinporten is a fake
// transport that answers every grant at once with a new token shaped like
// Maskinporten's, and whose key returns a dummy signature: for tests of the
// cache and the handler that need many tokens quickly.
func newOfflineServer(tb testing.TB) *Server { return newOfflineServerWith(tb, nil) }

// newOfflineServerWith is newOfflineServer with its Config changed by
// modify.
func newOfflineServerWith(tb testing.TB, modify func(*Config)) *Server {
	tb.Helper()
	s := unsignedSigner{testSigner(tb)}
	cfg := Config{
		OpenSigner: func(context.Context) (signer.Signer, error) { return s, nil },
		Grant: grant.Config{ClientID: "offline", Environment: grant.Environment{
			Issuer: "http://127.0.0.1:9/", TokenEndpoint: "http://127.0.0.1:9/token"},
			HTTPClient: &http.Client{Transport: new(fakeMaskinporten)}},
		ProbeInterval: -1,
	}
	if modify != nil {
		modify(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv
}

// unsignedSigner is a key whose signatures are zeros: fakeMaskinporten
// does not check them, and real ones would take most of the time.
type unsignedSigner struct{ *signer.FileSigner }

func (unsignedSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return make([]byte, 256), nil
}

// fakeMaskinporten answers every request with a new token that lives 120 s.
type fakeMaskinporten struct{ n atomic.Int64 }

func (f *fakeMaskinporten) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	i := int(f.n.Add(1))
	body := fmt.Sprintf(`{"access_token":%q,"token_type":"Bearer","expires_in":120,"scope":"example:scope/%d"}`, fakeAccessToken(i), i)
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: r}, nil
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
// requests do: each is fetched from fakeMaskinporten.
func fill(tb testing.TB, s *Server, n int) {
	for i := range n {
		scope := fmt.Sprintf("example:scope/%d", i)
		key := "mp\x00offline\x00" + scope + "\x00\x00\x00\x00"
		e, err := s.cache.add(key, newRequest(s, "offline", grant.Request{Scopes: []string{scope}}, false, callerID{uid: -1}))
		if err != nil {
			tb.Fatal(err)
		}
		if _, _, err := e.token(context.Background(), forUse); err != nil {
			tb.Fatal(err)
		}
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
// the 10,000 cache entries, their tokens, requests and timers add.
func BenchmarkHeap10000Keys(b *testing.B) {
	const n = 10000
	var total, added uint64
	for b.Loop() {
		s := newOfflineServer(b)
		before := heapInUse()
		fill(b, s, n)
		after := heapInUse()
		if s.cache.len() != n {
			b.Fatalf("%d keys in the cache", s.cache.len())
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
// without a network: the daemon's own cost per request. Each goroutine
// reuses one request and one ResponseWriter, so that httptest's own
// allocations (about 18 a request) are not counted as the daemon's.
func BenchmarkHandlerCachedToken(b *testing.B) {
	s := newOfflineServer(b)
	fill(b, s, 1)
	unix := &net.UnixAddr{Name: "/run/mp-hsm/mp-hsm.sock", Net: "unix"}
	benchHandler(b, s, func(r *http.Request) *http.Request {
		return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, unix))
	})
}

// BenchmarkHandlerCachedTokenClients is BenchmarkHandlerCachedToken with
// three clients, scope policies and the audit log on (to a file), the
// caller on TCP with a client's name and secret.
func BenchmarkHandlerCachedTokenClients(b *testing.B) {
	audit, err := OpenAuditLog(filepath.Join(b.TempDir(), "audit.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { audit.Close() })
	s := newOfflineServerWith(b, func(c *Config) {
		c.Audit = audit
		c.Clients = []Client{
			{Name: "ledger", Scopes: []string{"altinn:*"}, Users: []string{"0"}, Secret: "ledger-s3cret-8c2f"},
			{Name: "offline", Scopes: []string{"example:*"}, Groups: []string{"0"}, Secret: "offline-s3cret-8c2f"},
			{Name: "ops", Scopes: []string{"test:*"}, Users: []string{"65534"}, Secret: "ops-s3cret-8c2f01ab"},
		}
	})
	fill(b, s, 1)
	tcp := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8400}
	benchHandler(b, s, func(r *http.Request) *http.Request {
		r.SetBasicAuth("offline", "offline-s3cret-8c2f")
		r.Host = "127.0.0.1:8400"
		return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, tcp))
	})
}

// benchHandler posts the cached request to s in parallel, with one
// request, made by prepare, and one ResponseWriter per goroutine.
func benchHandler(b *testing.B, s *Server, prepare func(*http.Request) *http.Request) {
	const body = "grant_type=client_credentials&scope=example%3Ascope%2F0"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest(http.MethodPost, "/token", nil)
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r = prepare(r)
		rd := &benchBody{}
		w := &benchWriter{h: http.Header{}}
		for pb.Next() {
			rd.Reset(body)
			r.Body, r.ContentLength = rd, int64(len(body))
			clear(w.h)
			w.code = 0
			s.ServeHTTP(w, r)
			if w.code != http.StatusOK {
				b.Fatalf("status %d", w.code)
			}
		}
	})
}

type benchBody struct{ strings.Reader }

func (*benchBody) Close() error { return nil }

// benchWriter is a ResponseWriter that keeps the status and drops the body.
type benchWriter struct {
	h    http.Header
	code int
}

func (w *benchWriter) Header() http.Header { return w.h }
func (w *benchWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *benchWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return len(p), nil
}
