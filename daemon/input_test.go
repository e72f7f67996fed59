package daemon_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/daemon"
)

// Bad input gets an OAuth 2 error, never a crash, and never reaches
// Maskinporten.
func TestBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{noTCP: true})
	form := func(kv ...string) string {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return v.Encode()
	}
	ok := form("grant_type", "client_credentials", "scope", "test:read")
	cases := []struct {
		name, method, path, ctype, body string
		status                          int
		code                            string
	}{
		{"wrong grant_type", "POST", "/token", "", form("grant_type", "password", "scope", "test:read"), 400, "unsupported_grant_type"},
		{"jwt-bearer grant_type", "POST", "/token", "", form("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer", "scope", "test:read"), 400, "unsupported_grant_type"},
		{"no grant_type", "POST", "/token", "", form("scope", "test:read"), 400, "invalid_request"},
		{"no scope", "POST", "/token", "", form("grant_type", "client_credentials"), 400, "invalid_scope"},
		{"blank scope", "POST", "/token", "", form("grant_type", "client_credentials", "scope", "   "), 400, "invalid_scope"},
		{"control character in scope", "POST", "/token", "", form("grant_type", "client_credentials", "scope", "test:read\x01x"), 400, "invalid_scope"},
		{"newline in scope", "POST", "/token", "", form("grant_type", "client_credentials", "scope", "test:read\nx"), 400, "invalid_scope"},
		{"quote in scope", "POST", "/token", "", form("grant_type", "client_credentials", "scope", `te"st`), 400, "invalid_scope"},
		{"non-ASCII scope", "POST", "/token", "", form("grant_type", "client_credentials", "scope", "tést"), 400, "invalid_scope"},
		{"scope twice", "POST", "/token", "", form("grant_type", "client_credentials", "scope", "test:read", "scope", "test:write"), 400, "invalid_request"},
		{"invalid consumer_org", "POST", "/token", "", form("grant_type", "client_credentials", "scope", "test:read", "consumer_org", "123456789"), 400, "invalid_request"},
		{"consumer_org not digits", "POST", "/token", "", form("grant_type", "client_credentials", "scope", "test:read", "consumer_org", "abc"), 400, "invalid_request"},
		{"invalid pid", "POST", "/token", "", form("grant_type", "client_credentials", "scope", "test:read", "pid", "12345678901"), 400, "invalid_request"},
		{"invalid system_user_org", "POST", "/token", "", form("grant_type", "client_credentials", "scope", "test:read", "system_user_org", "1"), 400, "invalid_request"},
		{"relative resource", "POST", "/token", "", form("grant_type", "client_credentials", "scope", "test:read", "resource", "api/x"), 400, "invalid_request"},
		{"bad altinn flag", "POST", "/token", "", form("grant_type", "client_credentials", "scope", "test:read", "altinn", "yes"), 400, "invalid_request"},
		{"malformed form", "POST", "/token", "", "grant_type=client_credentials&scope=%zz", 400, "invalid_request"},
		{"JSON body", "POST", "/token", "application/json", `{"grant_type":"client_credentials"}`, 400, "invalid_request"},
		{"no content type", "POST", "/token", "-", ok, 400, "invalid_request"},
		{"GET /token", "GET", "/token", "", "", 405, "invalid_request"},
		{"PUT /token", "PUT", "/token", "", ok, 405, "invalid_request"},
		{"wrong path", "POST", "/oauth/token", "", ok, 404, "invalid_request"},
		{"root", "GET", "/", "", "", 404, "invalid_request"},
		{"1 MiB body", "POST", "/token", "", ok + "&pad=" + strings.Repeat("a", 1<<20), 413, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, "http://mp-hsm"+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			switch tc.ctype {
			case "":
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			case "-":
			default:
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := f.unix.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var a tokenAnswer
			if err := jsonDecode(resp, &a); err != nil {
				t.Fatalf("%d: the body is not JSON: %v", resp.StatusCode, err)
			}
			wantError(t, a, tc.status, tc.code)
		})
	}
	// A body larger than the limit without Content-Length (chunked).
	t.Run("1 MiB chunked", func(t *testing.T) {
		body := io.MultiReader(strings.NewReader(ok+"&pad="), bytes.NewReader(bytes.Repeat([]byte("a"), 1<<20)))
		req, _ := http.NewRequest("POST", "http://mp-hsm/token", body)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := f.unix.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a tokenAnswer
		jsonDecode(resp, &a)
		wantError(t, a, 413, "invalid_request")
	})
	if n := f.emu.Stats().TokenRequests; n != 0 {
		t.Fatalf("bad input caused %d Maskinporten requests", n)
	}
	if code, _ := f.get("/healthz"); code != http.StatusOK {
		t.Fatal("not healthy after bad input")
	}
	if code, _ := f.get("/readyz"); code != http.StatusOK {
		t.Fatal("not ready after bad input")
	}
	wantToken(t, f.post(scopeForm("test:read")))
}

// A slow client is cut off by the read timeouts; the daemon keeps serving.
func TestSlowClient(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{noTCP: true, modify: func(c *daemon.Config) { c.ReadTimeout = 600 * time.Millisecond }})
	dial := func() net.Conn {
		c, err := net.Dial("unix", f.sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	// Headers that never end.
	start := time.Now()
	c := dial()
	io.WriteString(c, "POST /token HTTP/1.1\r\nHost: mp-hsm\r\nContent-Type: application/x-www-form-urlencoded\r\n")
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("slow headers: %v, want the daemon to close the connection", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("slow headers were tolerated for %s", d)
	}
	// A body that never comes.
	start = time.Now()
	c = dial()
	io.WriteString(c, "POST /token HTTP/1.1\r\nHost: mp-hsm\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		defer resp.Body.Close()
		var a tokenAnswer
		jsonDecode(resp, &a)
		wantError(t, a, http.StatusBadRequest, "invalid_request")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a slow body was tolerated for %s", d)
	}
	wantToken(t, f.post(scopeForm("test:read")))
}

func TestStoreFull(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{noTCP: true, modify: func(c *daemon.Config) { c.MaxKeys = 1 }})
	wantToken(t, f.post(scopeForm("test:read")))
	a := f.post(scopeForm("test:write"))
	wantError(t, a, http.StatusServiceUnavailable, "temporarily_unavailable")
	wantToken(t, f.post(scopeForm("test:read"))) // the key in the store is still served
}
