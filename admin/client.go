// Package admin manages a Maskinporten client's registered keys through
// Digdir's self-service API, with the self-service client's tokens from any
// oauth2.TokenSource. The API keeps a client's keys as one JWK set that POST
// replaces whole (the last key goes with DELETE), so Add, Remove and Rotate
// read, change and write it back, refusing first what Digdir would refuse.
package admin

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/internal/textsafe"
)

// The self-service API's scopes, base URLs, and how many keys Digdir lets a client have.
const (
	ScopeRead  = "idporten:dcr.read"
	ScopeWrite = "idporten:dcr.write"
	TestAPI    = "https://api.test.samarbeid.digdir.no/api/v1/"
	ProdAPI    = "https://api.samarbeid.digdir.no/api/v1/"
	MaxKeys    = 5
)

// Client talks to the self-service API. Its fields map onto mp-hsm
// admin's flags. A Client is safe for concurrent use once set up.
type Client struct {
	BaseURL    string             // such as TestAPI; the trailing slash is optional
	Read       oauth2.TokenSource // scope idporten:dcr.read
	Write      oauth2.TokenSource // scope idporten:dcr.write; nil means Read
	HTTPClient *http.Client       // nil means http.DefaultClient's settings; redirects are never followed
	// AllowInsecure allows an http BaseURL for a host that is not loopback (its token may change every client's keys).
	AllowInsecure bool
}

// CheckBaseURL refuses an API base URL a self-service token must not go to,
// by grant.CheckEndpoint's rule: https, or http to loopback, unless
// allowInsecure.
func CheckBaseURL(raw string, allowInsecure bool) error {
	if err := grant.CheckEndpoint("self-service API URL", raw, allowInsecure); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// KeySet is a client's registered keys as the API answers them.
type KeySet struct {
	Keys        []Key
	Created     time.Time // zero when the API did not say
	LastUpdated time.Time // zero when the API did not say
}

// kidList is the set's kids for a message, escaped.
func (s *KeySet) kidList() string {
	if len(s.Keys) == 0 {
		return "none"
	}
	return textsafe.Escape(strings.Join(s.Kids(), ", "))
}

// Kids returns the kids of the set, in order.
func (s *KeySet) Kids() []string {
	out := make([]string, len(s.Keys))
	for i, k := range s.Keys {
		out[i] = k.Kid
	}
	return out
}

// List returns the keys registered on clientID.
func (c *Client) List(ctx context.Context, clientID string) (*KeySet, error) {
	var raw struct {
		Keys        []json.RawMessage `json:"keys"`
		Created     string            `json:"created"`
		LastUpdated string            `json:"last_updated"`
	}
	if err := c.do(ctx, http.MethodGet, clientID, nil, &raw); err != nil {
		return nil, err
	}
	keys, err := parseKeys(raw.Keys)
	if err != nil {
		return nil, fmt.Errorf("admin: the API's %w", err)
	}
	return &KeySet{Keys: keys, Created: parseTime(raw.Created), LastUpdated: parseTime(raw.LastUpdated)}, nil
}

// parseTime reads the API's dates: RFC 3339, with or without a zone; else zero.
func parseTime(s string) time.Time {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

// Add registers keys on clientID beside its others, under the change lock.
// Keys Digdir would refuse (CheckKey), a kid taken (ErrKidTaken) and more
// than MaxKeys (ErrTooManyKeys) are refused before anything is written.
// The set returned is read back; a failed write is a *ChangeError.
func (c *Client) Add(ctx context.Context, clientID string, keys ...Key) (*KeySet, error) {
	if err := checkNew(keys); err != nil {
		return nil, err
	}
	return c.change(ctx, clientID, "add", func(set *KeySet) ([]Key, error) {
		return append(slices.Clip(set.Keys), keys...), checkAdd(clientID, set, keys)
	})
}

// change reads clientID's set under its change lock and writes what next makes of it, unless next fails.
func (c *Client) change(ctx context.Context, clientID, op string, next func(*KeySet) ([]Key, error)) (*KeySet, error) {
	l, err := c.Lock(ctx, clientID)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	set, err := c.List(ctx, clientID)
	if err != nil {
		return nil, err
	}
	keys, err := next(set)
	if err != nil {
		return nil, err
	}
	return c.write(ctx, clientID, set, keys, op)
}

// checkNew refuses an empty list, a key Digdir would refuse and a kid given twice.
func checkNew(keys []Key) error {
	if len(keys) == 0 {
		return fmt.Errorf("admin: no key to add: %w", ErrInvalidKey)
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if err := CheckKey(k); err != nil {
			return err
		}
		if seen[k.Kid] {
			return fmt.Errorf("admin: kid %q given twice: %w", textsafe.Escape(k.Kid), ErrKidTaken)
		}
		seen[k.Kid] = true
	}
	return nil
}

// checkAdd refuses keys whose kid set has, and more than MaxKeys in all.
func checkAdd(clientID string, set *KeySet, keys []Key) error {
	for _, k := range keys {
		if slices.Contains(set.Kids(), k.Kid) {
			return fmt.Errorf("admin: client %s already has a key with kid %q: %w", clientID, textsafe.Escape(k.Kid), ErrKidTaken)
		}
	}
	if n := len(set.Keys) + len(keys); n > MaxKeys {
		return fmt.Errorf("admin: client %s has %d keys (%s) and may have at most %d: remove one first (mp-hsm admin keys remove --client-id %s --kid KID): %w",
			clientID, len(set.Keys), set.kidList(), MaxKeys, clientID, ErrTooManyKeys)
	}
	return nil
}

// Remove removes the key kid from clientID, keeping the others, as Add
// does; an unknown kid is ErrKidNotFound.
func (c *Client) Remove(ctx context.Context, clientID, kid string) (*KeySet, error) {
	return c.change(ctx, clientID, "remove", func(set *KeySet) ([]Key, error) { return without(clientID, set, kid) })
}

// without returns set's keys but kid, or ErrKidNotFound.
func without(clientID string, set *KeySet, kid string) ([]Key, error) {
	keep := slices.DeleteFunc(slices.Clone(set.Keys), func(k Key) bool { return k.Kid == kid })
	if len(keep) == len(set.Keys) {
		return nil, fmt.Errorf("admin: client %s has no key with kid %q (it has: %s): %w", clientID, textsafe.Escape(kid), set.kidList(), ErrKidNotFound)
	}
	return keep, nil
}

// token returns a token of the scope method needs (Write's for changes when
// set, else Read's); what says in an error what it is for.
func (c *Client) token(method, what string) (*oauth2.Token, error) {
	ts := c.Read
	if method != http.MethodGet && c.Write != nil {
		ts = c.Write
	}
	if ts == nil {
		return nil, errors.New("admin: no token source for the self-service client")
	}
	tok, err := ts.Token()
	if err != nil {
		return nil, fmt.Errorf("admin: a token %sfor the self-service client: %w", what, err)
	}
	return tok, nil
}

// do sends one request to clientID's jwks and decodes a 2xx answer into
// out (if not nil); any other status is an *APIError.
func (c *Client) do(ctx context.Context, method, clientID string, body io.Reader, out any) error {
	if err := CheckBaseURL(c.BaseURL, c.AllowInsecure); err != nil {
		return err
	}
	u := strings.TrimSuffix(c.BaseURL, "/") + "/clients/" + url.PathEscape(clientID) + "/jwks"
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	tok, err := c.token(method, "")
	if err != nil {
		return err
	}
	tok.SetAuthHeader(req)
	hc := *cmp.Or(c.HTTPClient, &http.Client{}) // a copy: its CheckRedirect is replaced
	// A redirect is not followed: it would carry the token past
	// CheckBaseURL (net/http keeps Authorization for the same host, also
	// from https to http). Its 3xx is the API's error.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin: %s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("admin: %s %s: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		return newAPIError(method, u, resp.StatusCode, data)
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin: %s %s: the answer is not the JSON expected: %w", method, u, err)
	}
	return nil
}

// APIError is an answer of the self-service API other than 2xx: its HTTP status and what it said.
type APIError struct {
	Method, URL string
	Status      int
	Code        string // "error", when the body had one
	Message     string // "error_description" or "message", or the body's start
}

func newAPIError(method, u string, status int, body []byte) *APIError {
	e := &APIError{Method: method, URL: u, Status: status}
	var b struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		Message     string `json:"message"`
	}
	if json.Unmarshal(body, &b) == nil { // the API's text, escaped for terminals and logs
		e.Code, e.Message = textsafe.Escape(b.Error), textsafe.Escape(cmp.Or(b.Description, b.Message))
	}
	if e.Code == "" && e.Message == "" {
		e.Message = textsafe.EscapeN(strings.TrimSpace(string(body)), 200)
	}
	return e
}

// Error returns one line: the request, the status and what the API said.
func (e *APIError) Error() string {
	s := fmt.Sprintf("self-service API: %s %s: HTTP %d", e.Method, e.URL, e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}
