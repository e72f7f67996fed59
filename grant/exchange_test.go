package grant

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// jtiRecorder is a RoundTripper that records the jti of each grant posted.
type jtiRecorder struct {
	mu   sync.Mutex
	jtis []string
}

func (r *jtiRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(b))
		form, _ := url.ParseQuery(string(b))
		if parts := strings.Split(form.Get("assertion"), "."); len(parts) == 3 {
			payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
			var c struct{ Jti string }
			json.Unmarshal(payload, &c)
			r.mu.Lock()
			r.jtis = append(r.jtis, c.Jti)
			r.mu.Unlock()
		}
	}
	return http.DefaultTransport.RoundTrip(req)
}

func (r *jtiRecorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.jtis...)
}

func TestExchangeX5C(t *testing.T) {
	srv := newEmulator(t, nil)
	cfg := testConfig(t, srv, 0)
	start := time.Now()
	tok, err := cfg.Exchange(context.Background(), Request{Scopes: []string{"test:read test:write"}})
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.ExpiresIn != 120 || tok.Scope != "test:read test:write" {
		t.Errorf("token = %+v", tok)
	}
	if d := tok.Expiry.Sub(start); d < 119*time.Second || d > 121*time.Second {
		t.Errorf("Expiry is %v after start, want about 120s", d)
	}
	o := tok.OAuth2()
	if o.AccessToken != tok.AccessToken || !o.Expiry.Equal(tok.Expiry) || o.Type() != "Bearer" {
		t.Errorf("OAuth2() = %+v", o)
	}
}

func TestExchangeKid(t *testing.T) {
	srv := newEmulator(t, nil)
	cfg := &Config{ClientID: testClient, Signer: thePKI(t).kidSigner(t), KeyID: testKid, Environment: emulatorEnv(srv)}
	if _, err := cfg.Exchange(context.Background(), testReq); err != nil {
		t.Fatal(err)
	}
	// An unknown kid is refused with a hint.
	cfg.KeyID = "unknown"
	_, err := cfg.Exchange(context.Background(), testReq)
	var te *TokenError
	if !errors.As(err, &te) || !errors.Is(err, ErrRefused) || te.Hint == "" {
		t.Errorf("unknown kid: %v", err)
	}
}

func TestExchangeRetries5xxWithNewGrant(t *testing.T) {
	srv := newEmulator(t, nil)
	rec := &jtiRecorder{}
	cfg := testConfig(t, srv, 0)
	cfg.HTTPClient = &http.Client{Transport: rec}
	srv.FailNext(1, http.StatusServiceUnavailable)
	if _, err := cfg.Exchange(context.Background(), testReq); err != nil {
		t.Fatal(err)
	}
	jtis := rec.seen()
	if len(jtis) != 2 || jtis[0] == "" || jtis[0] == jtis[1] {
		t.Errorf("jtis = %q, want two distinct", jtis)
	}
	if st := srv.Stats(); st.TokenRequests != 2 || st.Issued != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestExchangeRetriesDroppedConnection(t *testing.T) {
	srv := newEmulator(t, nil)
	cfg := testConfig(t, srv, 0)
	srv.DropNext(1)
	if _, err := cfg.Exchange(context.Background(), testReq); err != nil {
		t.Fatal(err)
	}
	if st := srv.Stats(); st.TokenRequests != 2 {
		t.Errorf("TokenRequests = %d, want 2", st.TokenRequests)
	}
}

func TestExchangeGivesUpAfterThree5xx(t *testing.T) {
	srv := newEmulator(t, nil)
	cfg := testConfig(t, srv, 0)
	srv.FailNext(5, http.StatusBadGateway)
	_, err := cfg.Exchange(context.Background(), testReq)
	var te *TokenError
	if !errors.As(err, &te) || !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v, want a *TokenError matching ErrUnavailable", err)
	}
	if te.StatusCode != http.StatusBadGateway || te.Attempts != 3 {
		t.Errorf("TokenError = %+v", te)
	}
	if n := srv.Stats().TokenRequests; n != 3 {
		t.Errorf("TokenRequests = %d, want 3", n)
	}
}

func TestExchange4xxNotRetried(t *testing.T) {
	srv := newEmulator(t, nil)
	cfg := testConfig(t, srv, 0)
	_, err := cfg.Exchange(context.Background(), Request{Scopes: []string{"not:mine"}})
	var te *TokenError
	if !errors.As(err, &te) || !errors.Is(err, ErrRefused) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want a *TokenError matching ErrRefused", err)
	}
	if te.StatusCode != http.StatusBadRequest || te.Code != "invalid_scope" || te.MPCode != "MP-200" || te.Hint == "" {
		t.Errorf("TokenError = %+v", te)
	}
	if n := srv.Stats().TokenRequests; n != 1 {
		t.Errorf("TokenRequests = %d, want exactly 1", n)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "hint: ") || strings.Contains(msg, "eyJ") {
		t.Errorf("message: %q", msg)
	}
}

func TestExchangeWrongCertificate(t *testing.T) {
	srv := newEmulator(t, nil)
	cfg := testConfig(t, srv, 0)
	cfg.ClientID = "no-such-client"
	_, err := cfg.Exchange(context.Background(), testReq)
	var te *TokenError
	if !errors.As(err, &te) || te.MPCode != "MP-100" || !strings.Contains(te.Hint, "client id") {
		t.Errorf("err = %v", err)
	}
}

func TestExchangeClockSkew(t *testing.T) {
	srv := newEmulator(t, nil)
	cfg := testConfig(t, srv, 0)
	srv.SetDateOffset(-90 * time.Second)
	_, err := cfg.Exchange(context.Background(), Request{Scopes: []string{"not:mine"}})
	var te *TokenError
	if !errors.As(err, &te) {
		t.Fatal(err)
	}
	if te.Skew > -85*time.Second || te.Skew < -95*time.Second || !strings.Contains(err.Error(), "clock skew") {
		t.Errorf("Skew = %v, message %q", te.Skew, err)
	}
}

func TestExchangeDeadline(t *testing.T) {
	srv := newEmulator(t, nil)
	cfg := testConfig(t, srv, 0)
	srv.SetLatency(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := cfg.Exchange(ctx, testReq)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestExchangeBadResponses(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"not JSON", `<html>ok</html>`},
		{"missing access_token", `{"token_type":"Bearer","expires_in":120}`},
		{"zero expires_in", `{"access_token":"x","token_type":"Bearer","expires_in":0}`},
		{"negative expires_in", `{"access_token":"x","token_type":"Bearer","expires_in":-5}`},
		{"missing expires_in", `{"access_token":"x","token_type":"Bearer"}`},
		{"fractional expires_in", `{"access_token":"x","token_type":"Bearer","expires_in":1.5}`},
		{"not Bearer", `{"access_token":"x","token_type":"DPoP","expires_in":120}`},
		{"too large", `{"access_token":"` + strings.Repeat("x", 1<<20) + `","expires_in":120}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCounter(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, tc.body) })
			cfg := &Config{ClientID: "c", Signer: thePKI(t).x5cSigner(t, 0), Environment: c.env()}
			_, err := cfg.Exchange(context.Background(), testReq)
			var re *ResponseError
			if !errors.Is(err, ErrBadResponse) || !errors.As(err, &re) {
				t.Fatalf("err = %v, want *ResponseError", err)
			}
			if c.Count() != 1 {
				t.Errorf("%d requests, want 1", c.Count())
			}
		})
	}
}

func TestExchangeNonJSONError(t *testing.T) {
	c := newCounter(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>Forbidden by proxy</html>", http.StatusForbidden)
	})
	cfg := &Config{ClientID: "c", Signer: thePKI(t).x5cSigner(t, 0), Environment: c.env()}
	_, err := cfg.Exchange(context.Background(), testReq)
	var te *TokenError
	if !errors.As(err, &te) || te.StatusCode != 403 || !strings.Contains(te.Description, "Forbidden by proxy") {
		t.Errorf("err = %v", err)
	}
}

// Invalid input is refused before any request is made.
func TestExchangeNoRequestWhenInvalid(t *testing.T) {
	c := newCounter(t, func(w http.ResponseWriter, r *http.Request) { t.Error("unexpected request") })
	p := thePKI(t)
	good := Config{ClientID: "c", Signer: p.x5cSigner(t, 0), Environment: c.env()}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		req  Request
		want error
	}{
		{"empty scope", nil, Request{}, ErrInvalidRequest},
		{"lifetime > 120s", nil, Request{Scopes: []string{"a"}, Lifetime: 121 * time.Second}, ErrInvalidRequest},
		{"bad consumer_org", nil, Request{Scopes: []string{"a"}, ConsumerOrg: "123456789"}, ErrInvalidRequest},
		{"bad pid", nil, Request{Scopes: []string{"a"}, PID: "12345678901"}, ErrInvalidRequest},
		{"consumer_org with iss_onbehalfof", nil, Request{Scopes: []string{"a"}, ConsumerOrg: "974760673", OnBehalfOf: "x"}, ErrInvalidRequest},
		{"token endpoint not a URL", func(c *Config) { c.Environment.TokenEndpoint = "token" }, testReq, ErrInvalidConfig},
		{"http for a non-loopback host", func(c *Config) { c.Environment.TokenEndpoint = "http://maskinporten.example/token" }, testReq, ErrInvalidConfig},
		{"no kid, no chain", func(c *Config) { c.Signer = p.kidSigner(t) }, testReq, ErrInvalidConfig},
		{"test certificate against prod", func(c *Config) {
			c.Environment.Name = "prod"
			c.Signer = fakeChainSigner{c.Signer, "Buypass Class 3 Test4 CA G2 ST Business"}
		}, testReq, ErrEnvironmentMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			if tc.edit != nil {
				tc.edit(&cfg)
			}
			if _, err := cfg.Exchange(context.Background(), tc.req); !errors.Is(err, tc.want) {
				t.Errorf("Exchange = %v, want %v", err, tc.want)
			}
			if _, err := cfg.TokenSource(context.Background(), tc.req).Token(); !errors.Is(err, tc.want) {
				t.Errorf("Token = %v, want %v", err, tc.want)
			}
		})
	}
	for _, tc := range invalidRequests {
		if _, err := good.Exchange(context.Background(), tc.req); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%s: Exchange = %v, want ErrInvalidRequest", tc.name, err)
		}
		if _, err := good.TokenSource(context.Background(), tc.req).Token(); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%s: Token = %v, want ErrInvalidRequest", tc.name, err)
		}
		if _, err := good.Grant(tc.req); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%s: Grant = %v, want ErrInvalidRequest", tc.name, err)
		}
	}
	if c.Count() != 0 {
		t.Errorf("%d requests, want none", c.Count())
	}
}
