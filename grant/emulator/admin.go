package emulator

import (
	"crypto"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/signer"
)

// The self-service API as Digdir serves it under
// https://api.test.samarbeid.digdir.no/api/v1/, here only a client's keys.
const (
	adminAPIPath = "/api/v1/"
	// ScopeAdminRead is the scope a self-service token needs to read.
	ScopeAdminRead = "idporten:dcr.read"
	// ScopeAdminWrite is the scope a self-service token needs to change.
	ScopeAdminWrite = "idporten:dcr.write"
	maxClientKeys   = 5 // how many keys Digdir lets a client have
)

// privateJWKMembers are the members of private or symmetric JWKs (RFC 7518
// section 6): a key set holding one is refused.
var privateJWKMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// clientJWKS is a client's key set as the self-service API keeps and shows it.
type clientJWKS struct {
	Keys    []any  `json:"keys"` // as posted, or *signer.JWK made from Client.Keys
	Created string `json:"created,omitempty"`
	Updated string `json:"last_updated,omitempty"`
}

// AdminAPIURL returns the base URL of the emulated self-service API, with
// its trailing slash, as --admin-api takes it (served if Config.AdminClient is set).
func (s *Server) AdminAPIURL() string { return s.URL + adminAPIPath }

func (s *Server) serveClientJWKS(w http.ResponseWriter, r *http.Request) {
	s.count(func(st *Stats) { st.AdminRequests++ })
	if status, code, detail := s.clientJWKS(w, r); status != 0 {
		writeJSON(w, status, map[string]string{"error": code, "error_description": detail})
	}
}

// clientJWKS answers GET, POST and DELETE on /api/v1/clients/{id}/jwks for a
// token of Config.AdminClient with the scope the method needs, or returns the refusal.
func (s *Server) clientJWKS(w http.ResponseWriter, r *http.Request) (status int, code, detail string) {
	if s.cfg.AdminClient == "" {
		return http.StatusNotFound, "not_found", "the self-service API is not served: the emulator has no self-service client"
	}
	need := map[string]string{http.MethodGet: ScopeAdminRead, http.MethodPost: ScopeAdminWrite, http.MethodDelete: ScopeAdminWrite}[r.Method]
	if need == "" {
		w.Header().Set("Allow", "GET, POST, DELETE")
		return http.StatusMethodNotAllowed, "method_not_allowed", r.Method + " is not served here"
	}
	claims, why := s.verifyAccessToken(r.Header.Get("Authorization"))
	if why != "" {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		return http.StatusUnauthorized, "invalid_token", "a Maskinporten access token is needed: " + why
	}
	if claims["client_id"] != s.cfg.AdminClient {
		return http.StatusForbidden, "access_denied", "the token's client is not a self-service client"
	}
	if scope, _ := claims["scope"].(string); !slices.Contains(strings.Fields(scope), need) {
		return http.StatusForbidden, "insufficient_scope", "the token lacks scope " + need
	}
	admin, _ := s.client(s.cfg.AdminClient)
	id := r.PathValue("id")
	target, ok := s.client(id)
	if !ok || target.OrgNumber != admin.OrgNumber {
		return http.StatusNotFound, "not_found", fmt.Sprintf("no client %q in the organisation", id)
	}
	switch r.Method {
	case http.MethodGet:
		var j *clientJWKS
		s.locked(func() { j = s.jwks[id] })
		writeJSON(w, http.StatusOK, j)
	case http.MethodDelete:
		s.setClientKeys(id, nil, nil)
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPost:
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			return http.StatusBadRequest, "invalid_request", "the body could not be read: " + err.Error()
		}
		keys, pubs, detail := parseClientJWKS(body)
		if detail != "" {
			return http.StatusBadRequest, "invalid_request", detail
		}
		writeJSON(w, http.StatusOK, s.setClientKeys(id, keys, pubs))
	}
	return 0, "", ""
}

// setClientKeys replaces client id's key set (keys nil: removes it) and the
// keys kid grants may use, at once.
func (s *Server) setClientKeys(id string, keys []any, pubs map[string]crypto.PublicKey) *clientJWKS {
	now := s.cfg.Now().UTC().Format(time.RFC3339)
	s.mu.Lock()
	defer s.mu.Unlock()
	j := &clientJWKS{Keys: []any{}}
	if keys != nil {
		j.Keys, j.Created, j.Updated = keys, now, now
		if old, ok := s.jwks[id]; ok && old.Created != "" {
			j.Created = old.Created
		}
	}
	s.jwks[id] = j
	c := s.clients[id]
	c.Keys = pubs
	if pubs == nil {
		c.Keys = map[string]crypto.PublicKey{}
	}
	s.clients[id] = c
	return j
}

// parseClientJWKS checks a posted key set as Digdir does (1 to maxClientKeys
// public keys, each with its own kid and use sig), or says why it refuses.
func parseClientJWKS(body []byte) ([]any, map[string]crypto.PublicKey, string) {
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, nil, "the body is not a JWK set: " + err.Error()
	}
	switch n := len(set.Keys); {
	case n == 0:
		return nil, nil, "the JWK set is empty; to remove every key, DELETE the set"
	case n > maxClientKeys:
		return nil, nil, fmt.Sprintf("%d keys: a client may have at most %d", n, maxClientKeys)
	}
	keys, pubs := []any{}, map[string]crypto.PublicKey{}
	for i, k := range set.Keys {
		for _, m := range privateJWKMembers {
			if _, ok := k[m]; ok {
				return nil, nil, fmt.Sprintf("key %d has the private member %q: register public keys only", i, m)
			}
		}
		kid, _ := k["kid"].(string)
		if kid == "" {
			return nil, nil, fmt.Sprintf("key %d has no kid", i)
		}
		if _, dup := pubs[kid]; dup {
			return nil, nil, fmt.Sprintf("kid %q appears twice", kid)
		}
		if use, _ := k["use"].(string); use != "sig" {
			return nil, nil, fmt.Sprintf("key %q: use must be \"sig\"", kid)
		}
		pub, why := jwkPublic(k)
		if why != "" {
			return nil, nil, fmt.Sprintf("key %q: %s", kid, why)
		}
		keys, pubs[kid] = append(keys, k), pub
	}
	return keys, pubs, ""
}

// jwkPublic reads a public JWK of a key that can sign grants (signer.CheckKey:
// RSA of 2048 bits or more), or EC on P-256, as Digdir takes.
func jwkPublic(k map[string]any) (crypto.PublicKey, string) {
	var j signer.JWK
	b, _ := json.Marshal(k)
	if err := json.Unmarshal(b, &j); err != nil || j.Kty == "EC" && j.Crv != "P-256" {
		return nil, "an RSA key with n and e, or an EC key of crv P-256 with x and y"
	}
	pub, err := j.PublicKey()
	if err == nil {
		err = signer.CheckKey(pub)
	}
	if err != nil {
		return nil, err.Error()
	}
	if r, ok := pub.(*rsa.PublicKey); ok && r.E < 3 {
		return nil, "e must be 3 or more"
	}
	return pub, ""
}
