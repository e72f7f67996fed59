package grant

import (
	"errors"
	"strings"
	"testing"
)

// TestEndpointCredentialsNotEchoed: a URL with credentials is refused, and
// neither the refusal nor a parse error repeats the password.
func TestEndpointCredentialsNotEchoed(t *testing.T) {
	for _, raw := range []string{
		"https://user:S3cretPw@maskinporten.example/token",
		"https://user:S3cretPw@bad host/token",         // does not parse
		"https://user:S3cret/Pw@maskinporten.example/", // '/' in the password
	} {
		err := Environment{Issuer: raw, TokenEndpoint: raw}.Validate(false)
		var ce *ConfigError
		if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("%s: %v, want a *ConfigError", redactURL(raw), err)
		}
		if strings.Contains(err.Error(), "S3cret") || strings.Contains(err.Error(), "user:") {
			t.Errorf("the error echoes the credentials: %v", err)
		}
		if !strings.Contains(err.Error(), "REDACTED@") {
			t.Errorf("the error does not show where: %v", err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://a:b@h/p":          "https://REDACTED@h/p",
		"https://h/p@x":            "https://REDACTED@x",
		"https://maskinporten.no/": "https://maskinporten.no/",
		"not a url user:pw@":       "not a url user:pw@",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
