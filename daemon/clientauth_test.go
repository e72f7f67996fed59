package daemon_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/daemon"
)

// specialSecrets hold every character that HTTP Basic's form-encoding
// (RFC 6749 section 2.3.1) changes or that a decoder may trip on: '+',
// '%' (before hex digits and not), ':', a space, '&' and '='. The first
// does not form-decode; the second does, to another string.
var specialSecrets = []string{"s3+cr%et:%41 b&c=d", "a+b%41:c d&e=f+long"}

// basicRaw sets HTTP Basic credentials as most libraries do: not
// form-encoded.
func basicRaw(id, secret string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(id, secret) }
}

// basicEncoded sets HTTP Basic credentials form-encoded first, as RFC 6749
// section 2.3.1 says.
func basicEncoded(id, secret string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret)) }
}

// TestSecretRawAndEncoded: a secret with special characters works over
// HTTP Basic raw and form-encoded, and in the form; its near misses do
// not.
func TestSecretRawAndEncoded(t *testing.T) {
	t.Parallel()
	for _, secret := range specialSecrets {
		t.Run(secret, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, options{modify: func(c *daemon.Config) { c.ClientSecret = secret }})
			u := f.tcp + "/token"
			for name, prepare := range map[string]func(*http.Request){
				"basic raw":     basicRaw(testClient, secret),
				"basic encoded": basicEncoded(testClient, secret),
				"basic encoded with %20": func(r *http.Request) {
					r.SetBasicAuth(testClient, strings.ReplaceAll(url.QueryEscape(secret), "+", "%20"))
				},
			} {
				a := postTo(t, f.client, u, scopeForm("test:read"), prepare)
				if a.Status != http.StatusOK {
					t.Fatalf("%s: %s, want a token", name, describe(a))
				}
				f.claims(a.AccessToken)
			}
			wantToken(t, postTo(t, f.client, u, scopeForm("test:read", "client_id", testClient, "client_secret", secret), nil))

			for name, prepare := range map[string]func(*http.Request){
				// '+' decodes to a space: the secret with a space for its '+'
				// is another secret.
				"plus as space":     basicRaw(testClient, strings.Replace(secret, "+", " ", 1)),
				"encoded twice":     basicEncoded(testClient, url.QueryEscape(secret)),
				"truncated at ':'":  basicRaw(testClient, strings.Split(secret, ":")[0]),
				"%41 decoded alone": basicRaw(testClient, strings.Replace(secret, "%41", "A", 1)),
			} {
				if a := postTo(t, f.client, u, scopeForm("test:read"), prepare); a.Status != http.StatusUnauthorized || a.Error != "invalid_client" {
					t.Fatalf("%s: %s, want 401 invalid_client", name, describe(a))
				}
			}
			// In the form, the value is what the form decodes to: no second
			// decoding.
			wantError(t, postTo(t, f.client, u, scopeForm("test:read", "client_id", testClient, "client_secret", url.QueryEscape(secret)), nil),
				http.StatusUnauthorized, "invalid_client")
		})
	}
}

// TestOneAuthenticationMethod: RFC 6749 section 2.3: a client must not use
// more than one method. HTTP Basic with client_secret in the body, or with
// another client_id there, is refused with invalid_request on either
// listener, even when both are right; HTTP Basic with the same client_id
// in the body (which several libraries send) is one method.
func TestOneAuthenticationMethod(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	tcp := f.tcp + "/token"
	basic := basicRaw(testClient, testSecret)
	for name, form := range map[string]url.Values{
		"basic and client_secret":    scopeForm("test:read", "client_secret", testSecret),
		"basic and id and secret":    scopeForm("test:read", "client_id", testClient, "client_secret", testSecret),
		"basic and another id":       scopeForm("test:read", "client_id", "someone-else"),
		"basic and an empty secret":  scopeForm("test:read", "client_secret", ""),
		"basic and a wrong secret":   scopeForm("test:read", "client_secret", "wrong"),
		"basic and two client_id":    scopeForm("test:read", "client_id", testClient, "client_id", "x"),
		"basic and an empty form id": scopeForm("test:read", "client_id", ""),
	} {
		for _, c := range []struct {
			client *http.Client
			url    string
		}{{f.client, tcp}, {f.unix, "http://mp-hsm/token"}} {
			a := postTo(t, c.client, c.url, form, basic)
			wantError(t, a, http.StatusBadRequest, "invalid_request")
			if !strings.Contains(a.Description, "one method") {
				t.Errorf("%s on %s: %q does not say why", name, c.url, a.Description)
			}
		}
	}
	wantToken(t, postTo(t, f.client, tcp, scopeForm("test:read", "client_id", testClient), basic))
	// The encoded Basic user names the same client as the form's client_id.
	wantToken(t, postTo(t, f.client, tcp, scopeForm("test:read", "client_id", testClient), basicEncoded(testClient, testSecret)))
	if n := f.metric(`mphsm_auth_failures_total`); n != 0 {
		t.Fatalf("%v authentication failures counted, want 0: two methods are a bad request, not a guess", n)
	}
}

// TestAuthenticationBeforeContentType: on TCP, a body that is not a form
// gets 401 invalid_client when the caller is not authenticated, and 400
// invalid_request when it is; a form that does not parse likewise.
func TestAuthenticationBeforeContentType(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	send := func(c *http.Client, u, ctype, body string, prepare func(*http.Request)) tokenAnswer {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", ctype)
		if prepare != nil {
			prepare(req)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var a tokenAnswer
		if err := jsonDecode(resp, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	tcp := f.tcp + "/token"
	jsonBody := `{"grant_type":"client_credentials","client_id":"` + testClient + `","client_secret":"` + testSecret + `"}`
	wantError(t, send(f.client, tcp, "application/json", jsonBody, nil), http.StatusUnauthorized, "invalid_client")
	wantError(t, send(f.client, tcp, "application/x-www-form-urlencoded", "scope=%zz&grant_type=client_credentials", nil),
		http.StatusUnauthorized, "invalid_client")
	wantError(t, send(f.client, tcp, "application/json", jsonBody, basicRaw(testClient, testSecret)), http.StatusBadRequest, "invalid_request")
	wantError(t, send(f.client, tcp, "application/x-www-form-urlencoded", "scope=%zz&grant_type=client_credentials", basicRaw(testClient, testSecret)),
		http.StatusBadRequest, "invalid_request")
	// A form that is malformed after the credentials still authenticates
	// with them, and is then refused for its fault.
	a := send(f.client, tcp, "application/x-www-form-urlencoded",
		"client_id="+testClient+"&client_secret="+testSecret+"&grant_type=client_credentials&scope=%zz", nil)
	wantError(t, a, http.StatusBadRequest, "invalid_request")
	// On the unix socket no credentials are needed: the type is judged.
	wantError(t, send(f.unix, "http://mp-hsm/token", "application/json", jsonBody, nil), http.StatusBadRequest, "invalid_request")
}

// metadataOf fetches and decodes the metadata at path.
func metadataOf(t *testing.T, c *http.Client, u string, host string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("GET %s: %q is not JSON: %v", u, b, err)
		}
	}
	return resp.StatusCode, m, resp.Header
}

// TestMetadata: RFC 8414 metadata at both well-known paths, without
// credentials, with URLs from the Host the client used, and the
// authentication methods of the listener.
func TestMetadata(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		status, m, h := metadataOf(t, f.client, f.tcp+path, "")
		if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
			t.Fatalf("GET %s over TCP: %d %s", path, status, h.Get("Content-Type"))
		}
		want := map[string]any{
			"issuer":                                f.tcp,
			"token_endpoint":                        f.tcp + "/token",
			"grant_types_supported":                 []any{"client_credentials"},
			"token_endpoint_auth_methods_supported": []any{"client_secret_basic", "client_secret_post"},
			"response_types_supported":              []any{},
			"authorization_details_types_supported": []any{}, // no client allows any
		}
		if !jsonEqual(m, want) {
			t.Fatalf("GET %s over TCP: %v, want %v", path, m, want)
		}
		// The issuer follows the Host the client used.
		_, m, _ = metadataOf(t, f.client, f.tcp+path, "localhost:1234")
		if m["issuer"] != "http://localhost:1234" || m["token_endpoint"] != "http://localhost:1234/token" {
			t.Fatalf("GET %s with Host localhost:1234: %v", path, m)
		}
		// On the unix socket: the host of the client's URL, and no
		// credentials needed.
		_, m, _ = metadataOf(t, f.unix, "http://mp-hsm"+path, "")
		want["issuer"], want["token_endpoint"] = "http://mp-hsm", "http://mp-hsm/token"
		want["token_endpoint_auth_methods_supported"] = []any{"none", "client_secret_basic", "client_secret_post"}
		if !jsonEqual(m, want) {
			t.Fatalf("GET %s over the unix socket: %v, want %v", path, m, want)
		}
	}
	// Metadata is read-only.
	resp, err := f.client.Post(f.tcp+"/.well-known/oauth-authorization-server", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST to the metadata: %d, want 405", resp.StatusCode)
	}
}

func jsonEqual(a, b map[string]any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// TestRateLimitedByMaskinporten: Maskinporten's 429 is the daemon's 503
// temporarily_unavailable with Maskinporten's Retry-After, not a fault of
// the daemon's configuration.
func TestRateLimitedByMaskinporten(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	f.emu.FailNext(1, http.StatusTooManyRequests)
	a := f.post(scopeForm("test:write"))
	wantError(t, a, http.StatusServiceUnavailable, "temporarily_unavailable")
	if ra := a.Header.Get("Retry-After"); ra != "1" {
		t.Fatalf("Retry-After %q, want the emulator's 1", ra)
	}
	if !strings.Contains(a.Description, "HTTP 429") {
		t.Fatalf("description %q does not name Maskinporten's 429", a.Description)
	}
}
