package emulator_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
)

// adminEnv is newEnv with the self-service client "admin" of orgA and a
// client "client-x" of another organisation.
func adminEnv(t *testing.T) *env {
	return newEnv(t, func(c *emulator.Config) {
		c.AdminClient = "admin"
		c.Clients = append(c.Clients,
			emulator.Client{ID: "admin", OrgNumber: orgA, Scopes: []string{emulator.ScopeAdminRead, emulator.ScopeAdminWrite}},
			emulator.Client{ID: "client-x", OrgNumber: orgOther, Scopes: []string{"test:read"}})
	})
}

// adminToken is an access token of client (by x5c, orgA) for scope.
func (e *env) adminToken(client, scope string) string {
	s := e.x5cGrant()
	s.claims["iss"], s.claims["scope"] = client, scope
	a, _ := e.mustIssue(s.sign(e.t))
	return a.AccessToken
}

// admin calls the self-service API and returns the status and decoded body.
func (e *env) admin(method, clientID, token, body string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.AdminAPIURL()+"clients/"+clientID+"/jwks", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			e.t.Fatalf("%s: %s is not JSON: %q", method, resp.Status, raw)
		}
	}
	return resp.StatusCode, out
}

func rsaJWK(pub *rsa.PublicKey, kid string) map[string]any {
	return map[string]any{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()), "e": "AQAB"}
}

func jwksBody(keys ...map[string]any) string {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return string(b)
}

func kids(body map[string]any) string {
	var out []string
	keys, _ := body["keys"].([]any)
	for _, k := range keys {
		out = append(out, fmt.Sprint(k.(map[string]any)["kid"]))
	}
	return strings.Join(out, ",")
}

func TestAdminJWKS(t *testing.T) {
	e := adminEnv(t)
	read, write := e.adminToken("admin", emulator.ScopeAdminRead), e.adminToken("admin", emulator.ScopeAdminWrite)

	st, body := e.admin(http.MethodGet, "client-k", read, "")
	if st != http.StatusOK || kids(body) != "key-1" || body["created"] == nil || body["last_updated"] == nil {
		t.Fatalf("GET = %d %v; want key-1 with created and last_updated", st, body)
	}
	// Adding key-2 beside key-1: it is at once good for kid grants.
	st, body = e.admin(http.MethodPost, "client-k", write, jwksBody(rsaJWK(&key(kOther).PublicKey, "key-1"), rsaJWK(&key(kLeaf).PublicKey, "key-2")))
	if st != http.StatusOK || kids(body) != "key-1,key-2" {
		t.Fatalf("POST = %d %v", st, body)
	}
	g := e.kidGrant()
	g.header["kid"], g.key = "key-2", key(kLeaf)
	e.mustIssue(g.sign(t))
	// Replacing the set with key-2 alone retires key-1.
	e.clock.Advance(time.Minute)
	st, body = e.admin(http.MethodPost, "client-k", write, jwksBody(rsaJWK(&key(kLeaf).PublicKey, "key-2")))
	if st != http.StatusOK || kids(body) != "key-2" || body["created"] == body["last_updated"] {
		t.Fatalf("POST key-2 alone = %d %v; want created kept, last_updated moved", st, body)
	}
	if a := e.post(e.kidGrant().sign(t)); a.status != http.StatusBadRequest {
		t.Errorf("a grant with the removed key-1: %d %s", a.status, a.raw)
	}
	// DELETE removes every key.
	if st, _ := e.admin(http.MethodDelete, "client-k", write, ""); st != http.StatusNoContent {
		t.Fatalf("DELETE = %d", st)
	}
	st, body = e.admin(http.MethodGet, "client-k", read, "")
	if st != http.StatusOK || kids(body) != "" {
		t.Errorf("GET after DELETE = %d %v", st, body)
	}
	if n := e.srv.Stats().AdminRequests; n != 5 {
		t.Errorf("AdminRequests = %d, want 5", n)
	}
}

func TestAdminJWKSRefusals(t *testing.T) {
	e := adminEnv(t)
	read, write := e.adminToken("admin", emulator.ScopeAdminRead), e.adminToken("admin", emulator.ScopeAdminWrite)
	other := e.adminToken("client-a", "test:read")
	good := rsaJWK(&key(kLeaf).PublicKey, "key-2")
	with := func(k map[string]any, kv ...any) map[string]any {
		out := map[string]any{}
		for n, v := range k {
			out[n] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(out, kv[i].(string))
			} else {
				out[kv[i].(string)] = kv[i+1]
			}
		}
		return out
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	six := make([]map[string]any, 6)
	for i := range six {
		six[i] = with(good, "kid", fmt.Sprint("k", i))
	}
	for _, tc := range []struct {
		name, method, client, token, body string
		status                            int
		error                             string
	}{
		{"no token", http.MethodGet, "client-k", "", "", http.StatusUnauthorized, "invalid_token"},
		{"not a token", http.MethodGet, "client-k", "garbage", "", http.StatusUnauthorized, "invalid_token"},
		{"not the self-service client", http.MethodGet, "client-k", other, "", http.StatusForbidden, "access_denied"},
		{"read scope writes", http.MethodPost, "client-k", read, jwksBody(good), http.StatusForbidden, "insufficient_scope"},
		{"read scope deletes", http.MethodDelete, "client-k", read, "", http.StatusForbidden, "insufficient_scope"},
		{"write scope reads", http.MethodGet, "client-k", write, "", http.StatusForbidden, "insufficient_scope"},
		{"unknown client", http.MethodGet, "nobody", read, "", http.StatusNotFound, "not_found"},
		{"another organisation's client", http.MethodGet, "client-x", read, "", http.StatusNotFound, "not_found"},
		{"PUT", http.MethodPut, "client-k", write, jwksBody(good), http.StatusMethodNotAllowed, "method_not_allowed"},
		{"not JSON", http.MethodPost, "client-k", write, "{", http.StatusBadRequest, "invalid_request"},
		{"empty set", http.MethodPost, "client-k", write, jwksBody(), http.StatusBadRequest, "invalid_request"},
		{"six keys", http.MethodPost, "client-k", write, jwksBody(six...), http.StatusBadRequest, "invalid_request"},
		{"no kid", http.MethodPost, "client-k", write, jwksBody(with(good, "kid", nil)), http.StatusBadRequest, "invalid_request"},
		{"no use", http.MethodPost, "client-k", write, jwksBody(with(good, "use", nil)), http.StatusBadRequest, "invalid_request"},
		{"use enc", http.MethodPost, "client-k", write, jwksBody(with(good, "use", "enc")), http.StatusBadRequest, "invalid_request"},
		{"private member", http.MethodPost, "client-k", write, jwksBody(with(good, "d", "AQAB")), http.StatusBadRequest, "invalid_request"},
		{"same kid twice", http.MethodPost, "client-k", write, jwksBody(good, good), http.StatusBadRequest, "invalid_request"},
		{"RSA 1024", http.MethodPost, "client-k", write, jwksBody(rsaJWK(&small.PublicKey, "small")), http.StatusBadRequest, "invalid_request"},
		{"bad modulus", http.MethodPost, "client-k", write, jwksBody(with(good, "n", "!!")), http.StatusBadRequest, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, body := e.admin(tc.method, tc.client, tc.token, tc.body)
			if st != tc.status || body["error"] != tc.error || body["error_description"] == "" {
				t.Errorf("%s = %d %v; want %d %s with a description", tc.method, st, body, tc.status, tc.error)
			}
		})
	}
	// Nothing changed: client-k still has key-1 alone, and it still works.
	if _, body := e.admin(http.MethodGet, "client-k", read, ""); kids(body) != "key-1" {
		t.Errorf("after the refusals client-k has %q, want key-1", kids(body))
	}
	e.mustIssue(e.kidGrant().sign(t))

	t.Run("not served without AdminClient", func(t *testing.T) {
		e := newEnv(t)
		if st, _ := e.admin(http.MethodGet, "client-k", e.adminToken("client-a", "test:read"), ""); st != http.StatusNotFound {
			t.Errorf("GET = %d, want 404", st)
		}
	})
}
