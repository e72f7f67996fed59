package admin_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
)

const org = "910000001"

var (
	keysOnce sync.Once
	testKeys [4]*rsa.PrivateKey // admin, k1, k2, spare
)

func rsaKey(i int) *rsa.PrivateKey {
	keysOnce.Do(func() {
		for i := range testKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			testKeys[i] = k
		}
	})
	return testKeys[i]
}

// fixture is an emulator with the self-service client "admin" and the
// client "app" holding key k1, and an admin.Client for it.
type fixture struct {
	srv *emulator.Server
	api *admin.Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := emulator.NewTest(t, emulator.Config{
		AdminClient: "admin",
		Clients: []emulator.Client{
			{ID: "admin", OrgNumber: org, Scopes: []string{admin.ScopeRead, admin.ScopeWrite},
				Keys: map[string]crypto.PublicKey{"admin-key": rsaKey(0).Public()}},
			{ID: "app", OrgNumber: org, Scopes: []string{"test:read"},
				Keys: map[string]crypto.PublicKey{"k1": rsaKey(1).Public()}},
		},
	})
	return &fixture{srv: srv, api: &admin.Client{
		BaseURL: srv.AdminAPIURL(),
		Read:    tokens(t, srv, "admin", 0, "admin-key", admin.ScopeRead),
		Write:   tokens(t, srv, "admin", 0, "admin-key", admin.ScopeWrite),
	}}
}

// tokens is a token source of client, signing kid grants with key i.
func tokens(t *testing.T, srv *emulator.Server, client string, i int, kid, scope string) oauth2.TokenSource {
	t.Helper()
	s, err := signer.NewFileSigner(rsaKey(i), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &grant.Config{ClientID: client, Signer: s, KeyID: kid,
		Environment: grant.Environment{Issuer: srv.Issuer(), TokenEndpoint: srv.TokenURL()}}
	return cfg.TokenSource(context.Background(), grant.Request{Scopes: []string{scope}})
}

// jwk is key i as a JWK with kid and use sig, plus extra members.
func jwk(t *testing.T, i int, kid string, extra ...string) admin.Key {
	t.Helper()
	return pubJWK(t, rsaKey(i).Public(), kid, extra...)
}

// pubJWK is pub as a JWK with kid and use sig, plus extra members.
func pubJWK(t *testing.T, pub crypto.PublicKey, kid string, extra ...string) admin.Key {
	t.Helper()
	j, err := signer.PublicJWK(pub, "", kid)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	b, _ := json.Marshal(j)
	_ = json.Unmarshal(b, &m)
	for n := 0; n < len(extra); n += 2 {
		if extra[n+1] == "" {
			delete(m, extra[n])
		} else {
			m[extra[n]] = extra[n+1]
		}
	}
	b, _ = json.Marshal(m)
	k, err := admin.ParseKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func kids(s *admin.KeySet) string { return strings.Join(s.Kids(), ",") }

func TestListAddRemove(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	set, err := fx.api.List(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if kids(set) != "k1" || set.Keys[0].Bits != 2048 || set.Keys[0].Kty != "RSA" || set.Created.IsZero() || set.LastUpdated.IsZero() {
		t.Fatalf("List = %+v", set)
	}
	if set, err = fx.api.Add(ctx, "app", jwk(t, 2, "k2")); err != nil || kids(set) != "k1,k2" {
		t.Fatalf("Add k2 = %v, %v; want k1,k2", set, err)
	}
	// The new key is at once good for kid grants of the client.
	if _, err := tokens(t, fx.srv, "app", 2, "k2", "test:read").Token(); err != nil {
		t.Fatalf("a token with the added key: %v", err)
	}
	if set, err = fx.api.Remove(ctx, "app", "k1"); err != nil || kids(set) != "k2" {
		t.Fatalf("Remove k1 = %v, %v; want k2", set, err)
	}
	if _, err := tokens(t, fx.srv, "app", 1, "k1", "test:read").Token(); err == nil {
		t.Errorf("a token with the removed key k1 was issued")
	}
	// The last key: DELETE.
	if set, err = fx.api.Remove(ctx, "app", "k2"); err != nil || len(set.Keys) != 0 {
		t.Fatalf("Remove k2 = %v, %v; want no keys", set, err)
	}
	if set, err = fx.api.List(ctx, "app"); err != nil || len(set.Keys) != 0 {
		t.Fatalf("List after removing the last = %v, %v", set, err)
	}
}

func TestAddRefusals(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	requests := func() int { return fx.srv.Stats().AdminRequests }
	for _, tc := range []struct {
		name string
		key  admin.Key
		want error
	}{
		{"private member", jwk(t, 2, "k2", "d", "AQAB"), admin.ErrInvalidKey},
		{"no kid", jwk(t, 2, "", "kid", ""), admin.ErrInvalidKey},
		{"use enc", jwk(t, 2, "k2", "use", "enc"), admin.ErrInvalidKey},
		{"no use", jwk(t, 2, "k2", "use", ""), admin.ErrInvalidKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := requests()
			if _, err := fx.api.Add(ctx, "app", tc.key); !errors.Is(err, tc.want) {
				t.Fatalf("Add = %v, want %v", err, tc.want)
			}
			if n := requests() - before; n != 0 {
				t.Errorf("%d requests sent before the refusal, want none", n)
			}
		})
	}
	t.Run("kid taken", func(t *testing.T) {
		before := requests()
		if _, err := fx.api.Add(ctx, "app", jwk(t, 2, "k1")); !errors.Is(err, admin.ErrKidTaken) {
			t.Fatalf("Add = %v, want ErrKidTaken", err)
		}
		if n := requests() - before; n != 1 {
			t.Errorf("%d requests, want 1 (the GET; no POST)", n)
		}
	})
	t.Run("sixth key", func(t *testing.T) {
		var four []admin.Key
		for i := range 4 {
			four = append(four, jwk(t, 2, fmt.Sprint("extra-", i)))
		}
		if _, err := fx.api.Add(ctx, "app", four...); err != nil {
			t.Fatal(err)
		}
		before := requests()
		_, err := fx.api.Add(ctx, "app", jwk(t, 3, "sixth"))
		if !errors.Is(err, admin.ErrTooManyKeys) || !strings.Contains(err.Error(), "k1, extra-0") || !strings.Contains(err.Error(), "remove") {
			t.Fatalf("Add a sixth = %v, want ErrTooManyKeys naming the keys and how to remove one", err)
		}
		if n := requests() - before; n != 1 {
			t.Errorf("%d requests, want 1 (the GET; no POST)", n)
		}
	})
	t.Run("remove unknown kid", func(t *testing.T) {
		before := requests()
		if _, err := fx.api.Remove(ctx, "app", "nope"); !errors.Is(err, admin.ErrKidNotFound) || !strings.Contains(err.Error(), "k1") {
			t.Fatalf("Remove = %v, want ErrKidNotFound naming the keys", err)
		}
		if n := requests() - before; n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})
	if set, err := fx.api.List(ctx, "app"); err != nil || len(set.Keys) != 5 {
		t.Errorf("after the refusals: %v, %v", set, err)
	}
}

func TestAPIError(t *testing.T) {
	fx := newFixture(t)
	// A token with the read scope alone cannot write: the API's 403 and
	// its words come back in an *APIError.
	api := &admin.Client{BaseURL: fx.srv.AdminAPIURL(), Read: fx.api.Read}
	_, err := api.Add(context.Background(), "app", jwk(t, 2, "k2"))
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ae.Code != "insufficient_scope" || !strings.Contains(ae.Message, admin.ScopeWrite) {
		t.Fatalf("Add with a read token = %v, want an *APIError 403 insufficient_scope", err)
	}
	_, err = fx.api.List(context.Background(), "nobody")
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("List of an unknown client = %v, want a 404 *APIError", err)
	}
	if strings.Contains(err.Error(), "eyJ") {
		t.Errorf("a token in the error: %v", err)
	}
}

// What an API answers is escaped in the error: it reaches terminals and logs.
func TestAPIErrorEscaped(t *testing.T) {
	for _, body := range []string{`{"error":"bad\u001b[31m","error_description":"x\u001b]0;owned\u0007"}`, "plain \x1b[2J text"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(body))
		}))
		api := &admin.Client{BaseURL: srv.URL + "/", Read: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t"}), AllowInsecure: true}
		_, err := api.List(context.Background(), "app")
		srv.Close()
		var ae *admin.APIError
		if !errors.As(err, &ae) || strings.ContainsRune(err.Error(), 0x1b) || !strings.Contains(err.Error(), `\x1b`) {
			t.Errorf("answer %q: error %q, want an *APIError with the escape written as \\x1b", body, err)
		}
	}
}

func TestParseKeys(t *testing.T) {
	one := `{"kty":"RSA","kid":"a","use":"sig","n":"AQAB","e":"AQAB"}`
	for in, want := range map[string]string{one: "a", `{"keys":[` + one + `,{"kty":"EC","kid":"b"}]}`: "a,b"} {
		ks, err := admin.ParseKeys([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range ks {
			got = append(got, k.Kid)
		}
		if !slices.Equal(got, strings.Split(want, ",")) {
			t.Errorf("ParseKeys(%s) = %v, want %s", in, got, want)
		}
	}
	if _, err := admin.ParseKeys([]byte("[")); err == nil {
		t.Error("ParseKeys took garbage")
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
