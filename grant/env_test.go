package grant

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestEnvironmentByName(t *testing.T) {
	for name, want := range map[string]Environment{"test": Test, "prod": Prod, "PROD": Prod} {
		got, err := EnvironmentByName(name)
		if err != nil || got != want {
			t.Errorf("EnvironmentByName(%q) = %+v, %v", name, got, err)
		}
	}
	if _, err := EnvironmentByName("ver2"); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("EnvironmentByName(ver2) = %v, want ErrInvalidConfig", err)
	}
	for _, e := range []Environment{Test, Prod} {
		if err := e.Validate(false); err != nil {
			t.Errorf("%s: %v", e.Name, err)
		}
		if !strings.HasSuffix(e.Issuer, "/") {
			t.Errorf("%s issuer %q lacks its trailing slash", e.Name, e.Issuer)
		}
	}
}

func TestCheckEndpoint(t *testing.T) {
	for _, tc := range []struct {
		url      string
		insecure bool
		ok       bool
	}{
		{"https://maskinporten.no/token", false, true},
		{"http://127.0.0.1:8080/token", false, true},
		{"http://[::1]:8080/token", false, true},
		{"http://localhost/token", false, true},
		{"http://maskinporten.no/token", false, false},
		{"http://maskinporten.no/token", true, true},
		{"maskinporten.no/token", false, false},
		{"not a url", false, false},
		{"://x", false, false},
		{"/token", false, false},
		{"ftp://maskinporten.no/token", false, false},
		{"https://user:pw@maskinporten.no/token", false, false},
		{"", false, false},
	} {
		err := CheckEndpoint("TokenEndpoint", tc.url, tc.insecure)
		if tc.ok != (err == nil) {
			t.Errorf("CheckEndpoint(%q, %v) = %v, want ok=%v", tc.url, tc.insecure, err, tc.ok)
		}
		var ce *ConfigError
		if err != nil && (!errors.Is(err, ErrInvalidConfig) || !errors.As(err, &ce)) {
			t.Errorf("CheckEndpoint(%q) = %T %v, want *ConfigError", tc.url, err, err)
		}
	}
}

func TestDiscover(t *testing.T) {
	srv := newEmulator(t, nil)
	env, err := Discover(context.Background(), nil, srv.MetadataURL(), false)
	if err != nil {
		t.Fatal(err)
	}
	if env.Issuer != srv.Issuer() || env.TokenEndpoint != srv.TokenURL() {
		t.Errorf("Discover = %+v", env)
	}
}

func TestDiscoverBadMetadata(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
	}{
		{"no issuer", `{"token_endpoint":"https://x.example/token"}`},
		{"no token_endpoint", `{"issuer":"https://x.example/"}`},
		{"not JSON", `<html>`},
		{"insecure endpoint", `{"issuer":"https://x.example/","token_endpoint":"http://x.example/token"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCounter(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, tc.body) })
			_, err := Discover(context.Background(), nil, c.URL+"/.well-known/oauth-authorization-server", false)
			var re *ResponseError
			if !errors.Is(err, ErrBadResponse) || !errors.As(err, &re) {
				t.Errorf("Discover = %v, want *ResponseError", err)
			}
		})
	}
	// An insecure metadata URL is refused before any request.
	if _, err := Discover(context.Background(), nil, "http://maskinporten.example/.well-known/x", false); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Discover(http) = %v, want ErrInvalidConfig", err)
	}
}

// TestDiscoverInsecure: allowInsecure admits metadata naming http endpoints
// on a host that is not loopback; without it they are refused.
func TestDiscoverInsecure(t *testing.T) {
	c := newCounter(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"issuer":"http://x.example/","token_endpoint":"http://x.example/token"}`)
	})
	env, err := Discover(context.Background(), nil, c.URL, true)
	if err != nil || env.TokenEndpoint != "http://x.example/token" {
		t.Errorf("Discover(insecure) = %+v, %v", env, err)
	}
	if _, err := Discover(context.Background(), nil, c.URL, false); !errors.Is(err, ErrBadResponse) || !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Discover = %v, want ErrBadResponse wrapping ErrInvalidConfig", err)
	}
}

func certIssuedBy(cn string) *x509.Certificate {
	return &x509.Certificate{Issuer: pkix.Name{CommonName: cn}}
}

func TestEnvironmentForCertificate(t *testing.T) {
	for cn, want := range map[string]string{
		"Buypass Class 3 Test4 CA G2 ST Business":              "test",
		"Commfides CPN Enterprise-Norwegian SHA256 CA - TEST2": "test",
		"Commfides Legal Person - G3 - TEST":                   "test",
		"Buypass Class 3 CA G2 HT Business":                    "prod",
		"CPN Enterprise SHA256 CLASS 3":                        "prod",
		"Commfides Legal Person - G3":                          "prod",
	} {
		got, err := EnvironmentForCertificate(certIssuedBy(cn))
		if err != nil || got.Name != want {
			t.Errorf("EnvironmentForCertificate(%q) = %q, %v; want %q", cn, got.Name, err, want)
		}
	}
	if _, err := EnvironmentForCertificate(certIssuedBy("Some Other CA")); !errors.Is(err, ErrUnknownIssuer) {
		t.Errorf("unknown CA: %v, want ErrUnknownIssuer", err)
	}
}

func TestCheckEnvironment(t *testing.T) {
	testCert := []*x509.Certificate{certIssuedBy("Buypass Class 3 Test4 CA G2 ST Business")}
	prodCert := []*x509.Certificate{certIssuedBy("Buypass Class 3 CA G2 ST Business")}
	other := []*x509.Certificate{certIssuedBy("mp-hsm Test Root CA")}
	for _, tc := range []struct {
		env   Environment
		chain []*x509.Certificate
		ok    bool
	}{
		{Test, testCert, true},
		{Prod, prodCert, true},
		{Prod, testCert, false},
		{Test, prodCert, false},
		{Test, other, true},
		{Prod, nil, true},
		{Environment{Issuer: "http://127.0.0.1/"}, prodCert, true},
	} {
		err := CheckEnvironment(tc.env, tc.chain)
		if tc.ok != (err == nil) {
			t.Errorf("CheckEnvironment(%s, %s) = %v", tc.env.Name, tc.chain[0].Issuer.CommonName, err)
			continue
		}
		if err != nil {
			var me *EnvironmentMismatchError
			if !errors.Is(err, ErrEnvironmentMismatch) || !errors.As(err, &me) {
				t.Errorf("error %v is not an *EnvironmentMismatchError", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "test") || !strings.Contains(msg, "prod") {
				t.Errorf("message does not name both environments: %s", msg)
			}
		}
	}
}
