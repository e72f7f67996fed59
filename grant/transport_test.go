package grant

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// api is a resource server that refuses the first token it sees with 401
// and accepts any other, recording the bodies it got.
type api struct {
	mu      sync.Mutex
	refused string
	auths   []string
	bodies  []string
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	auth := r.Header.Get("Authorization")
	a.mu.Lock()
	defer a.mu.Unlock()
	a.auths = append(a.auths, auth)
	a.bodies = append(a.bodies, string(b))
	if a.refused == "" {
		a.refused = auth
	}
	if !strings.HasPrefix(auth, "Bearer ") || auth == a.refused {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.Write([]byte("ok"))
}

func TestClientRetriesOnceOn401(t *testing.T) {
	srv := newEmulator(t, nil)
	a := &api{}
	apiSrv := httptest.NewServer(a)
	defer apiSrv.Close()
	client := testConfig(t, srv, 0).Client(context.Background(), testReq)

	resp, err := client.Post(apiSrv.URL, "text/plain", bytes.NewReader([]byte("payload")))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("answer %d %q", resp.StatusCode, body)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.auths) != 2 || a.auths[0] == a.auths[1] || a.bodies[1] != "payload" {
		t.Errorf("auths %d (distinct: %v), bodies %q", len(a.auths), len(a.auths) == 2 && a.auths[0] != a.auths[1], a.bodies)
	}
	if n := srv.Stats().TokenRequests; n != 2 {
		t.Errorf("TokenRequests = %d, want 2", n)
	}
}

func TestClientDoesNotRetryUnreplayableBody(t *testing.T) {
	srv := newEmulator(t, nil)
	a := &api{}
	apiSrv := httptest.NewServer(a)
	defer apiSrv.Close()
	client := testConfig(t, srv, 0).Client(context.Background(), testReq)
	req, _ := http.NewRequest(http.MethodPost, apiSrv.URL, io.NopCloser(strings.NewReader("payload")))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	if resp.StatusCode != http.StatusUnauthorized || len(a.auths) != 1 {
		t.Errorf("status %d after %d requests; want 401 after 1", resp.StatusCode, len(a.auths))
	}
}

func TestClientRetriesOnlyOnce(t *testing.T) {
	srv := newEmulator(t, nil)
	var n atomic.Int64
	apiSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer apiSrv.Close()
	resp, err := testConfig(t, srv, 0).Client(context.Background(), testReq).Get(apiSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || n.Load() != 2 {
		t.Errorf("status %d after %d requests; want 401 after 2", resp.StatusCode, n.Load())
	}
}

func TestTransportKeepsTokenFromOtherHosts(t *testing.T) {
	srv := newEmulator(t, nil)
	var gotAuth atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth.Store(r.Header.Get("Authorization"))
	}))
	defer other.Close()
	// localhost and 127.0.0.1 are different hosts to the client.
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			t.Error("no token on the first host")
		}
		http.Redirect(w, r, otherURL, http.StatusFound)
	}))
	defer first.Close()
	resp, err := testConfig(t, srv, 0).Client(context.Background(), testReq).Get(first.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if gotAuth.Load() != "" {
		t.Error("token sent to the host a redirect led to")
	}
}

// A token endpoint's redirect is not followed, with the caller's own client
// too: following a 307 would post the grant to the redirect's target.
func TestGrantNeverFollowsRedirect(t *testing.T) {
	srv := newEmulator(t, nil)
	var posted atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { posted.Add(1) }))
	defer target.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/token", http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	cfg := testConfig(t, srv, 0)
	cfg.Environment.TokenEndpoint = redirect.URL + "/token"
	cfg.HTTPClient = &http.Client{} // follows redirects by default
	if _, err := cfg.Exchange(context.Background(), testReq); err == nil {
		t.Fatal("Exchange through a 307 succeeded")
	}
	if n := posted.Load(); n != 0 {
		t.Fatalf("the redirect's target got %d requests, want 0", n)
	}
}
