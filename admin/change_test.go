package admin_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/grant"
)

// TestMain keeps the change locks of the tests in a directory of their own.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "admin-locks")
	if err != nil {
		panic(err)
	}
	os.Setenv("MP_HSM_LOCK_DIR", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// countingSource counts the tokens asked of it.
type countingSource struct{ n atomic.Int32 }

func (c *countingSource) Token() (*oauth2.Token, error) {
	c.n.Add(1)
	return &oauth2.Token{AccessToken: "secret-self-service-token", TokenType: "Bearer"}, nil
}

// TestBaseURLRefused: an http API that is not on loopback gets no token
// (the token endpoint's rule, grant.CheckEndpoint); https, loopback http
// and AllowInsecure are let through to the token source.
func TestBaseURLRefused(t *testing.T) {
	for _, tc := range []struct {
		url      string
		insecure bool
		refused  bool
	}{
		{"http://api.test.samarbeid.digdir.no/api/v1/", false, true},
		{"http://10.0.0.1:8080/api/v1/", false, true},
		{"ftp://api.example/api/v1/", false, true},
		{"https://user:pw@api.example/api/v1/", false, true},
		{"", false, true},
		{"http://api.test.samarbeid.digdir.no/api/v1/", true, false},
		{"http://127.0.0.1:1/api/v1/", false, false},
		{"https://127.0.0.1:1/api/v1/", false, false},
	} {
		ts := &countingSource{}
		api := &admin.Client{BaseURL: tc.url, Read: ts, AllowInsecure: tc.insecure}
		_, err := api.List(context.Background(), "app")
		var ce *grant.ConfigError
		if tc.refused {
			if !errors.As(err, &ce) || ts.n.Load() != 0 || strings.Contains(err.Error(), "pw@") {
				t.Errorf("%s: %v after %d tokens, want a *grant.ConfigError and no token", tc.url, err, ts.n.Load())
			}
			if err := admin.CheckBaseURL(tc.url, tc.insecure); !errors.As(err, &ce) {
				t.Errorf("CheckBaseURL(%s) = %v", tc.url, err)
			}
			continue
		}
		if errors.As(err, &ce) || ts.n.Load() != 1 {
			t.Errorf("%s (insecure %v): %v after %d tokens, want the request tried", tc.url, tc.insecure, err, ts.n.Load())
		}
	}
}

// roundTrip is an http.RoundTripper from a function.
type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestConcurrentAddsKeepBoth: two Adds at once, whose reads the transport
// holds until both have read (or a while has passed: under the change lock
// the second read waits for the first Add to end). Without the lock both
// read {k1} and the second write erases the first's key.
func TestConcurrentAddsKeepBoth(t *testing.T) {
	fx := newFixture(t)
	var mu sync.Mutex
	gets := 0
	both := make(chan struct{})
	fx.api.HTTPClient = &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if r.Method == http.MethodGet {
			mu.Lock()
			gets++
			if gets == 2 {
				close(both)
			}
			mu.Unlock()
			select {
			case <-both:
			case <-time.After(300 * time.Millisecond):
			}
		}
		return resp, err
	})}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			_, errs[i] = fx.api.Add(ctx, "app", jwk(t, 2+i, fmt.Sprint("new-", i)))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Add %d: %v", i, err)
		}
	}
	set, err := fx.api.List(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if got := kids(set); len(set.Keys) != 3 || !strings.Contains(got, "new-0") || !strings.Contains(got, "new-1") {
		t.Errorf("after two Adds at once the client has %s, want k1, new-0 and new-1", got)
	}
}

// TestLostReplyReadBack: a write whose answer is lost is judged by the set
// read back: a POST that the API carried out is a success; one it did not
// is a *ChangeError that shows the real set.
func TestLostReplyReadBack(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	var drop atomic.Bool
	fx.api.HTTPClient = &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodGet || !drop.Load() {
			return http.DefaultTransport.RoundTrip(r)
		}
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return nil, errors.New("connection reset by peer (the answer is lost)")
	})}
	drop.Store(true)
	set, err := fx.api.Add(ctx, "app", jwk(t, 2, "k2"))
	if err != nil || kids(set) != "k1,k2" {
		t.Fatalf("Add whose answer was lost = %v, %v; want the set read back, k1,k2", set, err)
	}
	set, err = fx.api.Remove(ctx, "app", "k1")
	if err != nil || kids(set) != "k2" {
		t.Fatalf("Remove whose answer was lost = %v, %v; want k2", set, err)
	}
	// A write the API refused: the state read back, and nothing changed.
	fx.api.Write = fx.api.Read
	drop.Store(false)
	_, err = fx.api.Add(ctx, "app", jwk(t, 3, "k3"))
	var ce *admin.ChangeError
	var ae *admin.APIError
	if !errors.As(err, &ce) || !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ce.State == nil || kids(ce.State) != "k2" ||
		!strings.Contains(err.Error(), "read back from the API: client app has 1 key(s): k2") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("Add refused by the API = %v, want a *ChangeError with the 403 and the set k2", err)
	}
}

// TestPrivateMembersNeverSent: private members in any letter case and at
// any depth refuse the key, with nothing sent; of an accepted key only the
// allowlisted public members reach the API.
func TestPrivateMembersNeverSent(t *testing.T) {
	fx := newFixture(t)
	var bodies []string
	var mu sync.Mutex
	fx.api.HTTPClient = &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			bodies = append(bodies, string(b))
			mu.Unlock()
			r.Body = io.NopCloser(strings.NewReader(string(b)))
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	ctx := context.Background()
	before := fx.srv.Stats().AdminRequests
	for name, extra := range map[string][]string{
		"D": {"D", "AQAB"}, "P": {"P", "AQAB"}, "Q": {"Q", "AQAB"}, "Dp": {"Dp", "AQAB"}, "K": {"K", "AQAB"},
	} {
		_, err := fx.api.Add(ctx, "app", jwk(t, 2, "k2", extra...))
		if !errors.Is(err, admin.ErrInvalidKey) || !strings.Contains(err.Error(), "private members ("+name+")") {
			t.Errorf("member %s: Add = %v, want ErrInvalidKey naming it", name, err)
		}
	}
	for _, raw := range []string{
		`{"kty":"RSA","kid":"n1","use":"sig","n":"AQAB","e":"AQAB","ext":{"d":"AQAB"}}`,
		`{"kty":"RSA","kid":"n2","use":"sig","n":"AQAB","e":"AQAB","oth":[{"r":"AQAB","d":"AQAB","t":"AQAB"}]}`,
		`{"kty":"RSA","kid":"n3","use":"sig","n":"AQAB","e":"AQAB","x":[{"Qi":"AQAB"}]}`,
	} {
		k, err := admin.ParseKey([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fx.api.Add(ctx, "app", k); !errors.Is(err, admin.ErrInvalidKey) || !strings.Contains(err.Error(), "private members") {
			t.Errorf("%s: Add = %v, want ErrInvalidKey", raw, err)
		}
	}
	if n := fx.srv.Stats().AdminRequests - before; n != 0 || len(bodies) != 0 {
		t.Fatalf("%d requests for refused keys, want none", n)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, k := range []admin.Key{jwk(t, 2, "k2", "ext", "hello", "key_ops", "sign", "x", "AQAB", "crv", "P-256"), pubJWK(t, ec.Public(), "k3", "n", "AQAB", "extra", "z")} {
		if _, err := fx.api.Add(ctx, "app", k); err != nil {
			t.Fatalf("Add %s: %v", k.Kid, err)
		}
	}
	allowed := map[string]string{"RSA": "kty kid alg use n e", "EC": "kty kid alg use crv x y"}
	for _, b := range bodies {
		var set struct{ Keys []map[string]any }
		if err := json.Unmarshal([]byte(b), &set); err != nil {
			t.Fatal(err)
		}
		for _, k := range set.Keys {
			for m := range k {
				if !slices.Contains(strings.Fields(allowed[fmt.Sprint(k["kty"])]), m) {
					t.Errorf("sent member %q of a %v key, which is no public member of its type: %s", m, k["kty"], b)
				}
			}
		}
	}
	if len(bodies) != 2 {
		t.Errorf("%d bodies sent, want 2", len(bodies))
	}
}
