package grant

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The parsers of what a server sends must never panic, and what they accept
// must be usable. Seeds: f.Add here and testdata/fuzz/.

func FuzzTokenResponse(f *testing.F) {
	f.Add([]byte(`{"access_token":"x","token_type":"Bearer","expires_in":120,"scope":"a b"}`))
	f.Add([]byte(`{"access_token":"x","expires_in":"120"}`))
	f.Add([]byte(`{"access_token":"","expires_in":120}`))
	f.Add([]byte(`{"access_token":"x","expires_in":-1}`))
	f.Add([]byte(`{"access_token":"x","expires_in":1e3}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`not json`))
	start := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := parseTokenResponse("https://mp.example/token", 200, body, start)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error %v does not match ErrBadResponse", err)
			}
			if tok != nil {
				t.Fatal("a token and an error")
			}
			return
		}
		if tok.AccessToken == "" || tok.ExpiresIn <= 0 || tok.TokenType != "Bearer" || !tok.Expiry.After(start) {
			t.Fatalf("accepted an unusable token: %+v", tok)
		}
	})
}

func FuzzErrorResponse(f *testing.F) {
	f.Add(400, []byte(`{"error":"invalid_grant","error_description":"Invalid assertion. (trace_id: 1)","error_uri":"https://maskinporten.no/errors/MP-124"}`))
	f.Add(403, []byte(`{"error":"access_denied","error_description":"MP-251 not delegated"}`))
	f.Add(400, []byte(`{"error":123}`))
	f.Add(401, []byte("<html>nope</html>"))
	f.Add(429, []byte(""))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 400 || status > 499 {
			status = 400 + (status%100+100)%100
		}
		e := tokenError(&answer{url: "https://mp.example/token", status: status, body: body, attempts: 1})
		msg := e.Error()
		if !errors.Is(e, ErrRefused) {
			t.Fatalf("a %d answer does not match ErrRefused: %v", status, e)
		}
		if strings.ContainsAny(msg, "\n\r") {
			t.Fatalf("error is not one line: %q", msg)
		}
	})
}

func FuzzMetadata(f *testing.F) {
	f.Add([]byte(`{"issuer":"https://test.maskinporten.no/","token_endpoint":"https://test.maskinporten.no/token"}`))
	f.Add([]byte(`{"issuer":"http://127.0.0.1:8080/","token_endpoint":"http://127.0.0.1:8080/token"}`))
	f.Add([]byte(`{"issuer":"https://evil.example/","token_endpoint":"http://evil.example/token"}`))
	f.Add([]byte(`{"token_endpoint":"https://x/token"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		env, err := parseMetadata("https://mp.example/.well-known/oauth-authorization-server", 200, body, false)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error %v does not match ErrBadResponse", err)
			}
			return
		}
		if env.Issuer == "" || env.TokenEndpoint == "" {
			t.Fatalf("accepted metadata without issuer or token endpoint: %+v", env)
		}
		if err := env.Validate(false); err != nil {
			t.Fatalf("accepted an environment that does not validate: %v", err)
		}
	})
}

func FuzzOrgNumberAndPID(f *testing.F) {
	for _, s := range []string{"974760673", "910000004", "123456789", "12345678901", "01010112345", "", "9747606730", "97476067a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidOrgNumber(s) {
			if len(s) != 9 || !allDigits(s) {
				t.Fatalf("ValidOrgNumber(%q) for a string that is not 9 digits", s)
			}
			// Changing one digit must break the check digit.
			b := []byte(s)
			b[3] = '0' + (b[3]-'0'+1)%10
			if ValidOrgNumber(string(b)) {
				t.Fatalf("ValidOrgNumber accepts both %q and %q", s, b)
			}
		}
		if ValidPID(s) && (len(s) != 11 || !allDigits(s)) {
			t.Fatalf("ValidPID(%q) for a string that is not 11 digits", s)
		}
		if len(s) == 11 && allDigits(s) {
			if m := MaskPID(s); m != s[:6]+"*****" {
				t.Fatalf("MaskPID(%q) = %q shows the last five digits", s, m)
			}
		}
	})
}
