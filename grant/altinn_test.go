package grant

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestAltinnToken(t *testing.T) {
	srv := newEmulator(t, nil)
	cfg := testConfig(t, srv, 0)
	ctx := context.Background()
	mp, err := cfg.Exchange(ctx, Request{Scopes: []string{"altinn:serviceowner"}})
	if err != nil {
		t.Fatal(err)
	}
	at, err := cfg.AltinnToken(ctx, mp.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if at.AccessToken == "" || at.AccessToken == mp.AccessToken || at.TokenType != "Bearer" {
		t.Errorf("Altinn token = %+v", at)
	}
	if d := at.Expiry.Sub(mp.Expiry); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("Altinn token expires %v after the Maskinporten token, want about the same", d)
	}
	_, err = cfg.AltinnToken(ctx, "not-a-token")
	var te *TokenError
	if !errors.As(err, &te) || !errors.Is(err, ErrRefused) || te.StatusCode != 401 || te.Hint == "" {
		t.Errorf("bad token: %v", err)
	}
}

func TestAltinnTokenSource(t *testing.T) {
	srv := newEmulator(t, nil)
	cfg := testConfig(t, srv, 0)
	ctx := context.Background()
	ts := cfg.AltinnTokenSource(ctx, Request{Scopes: []string{"altinn:serviceowner"}})
	a1, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	a2, err := ts.Token()
	if err != nil || a2 != a1 {
		t.Fatalf("second Token: %v, same %v", err, a2 == a1)
	}
	if st := srv.Stats(); st.AltinnExchanges != 1 || st.TokenRequests != 1 {
		t.Errorf("stats = %+v, want one exchange and one token request", st)
	}
}

func TestAltinnTokenHTTPTest(t *testing.T) {
	// A JWT with iat 1000 and exp 1600 (unsigned: the client does not verify).
	const altinnJWT = "eyJhbGciOiJSUzI1NiJ9.eyJpYXQiOjEwMDAsImV4cCI6MTYwMH0.c2ln"
	for _, tc := range []struct {
		name, body string
		ok         bool
	}{
		{"text", altinnJWT, true},
		{"JSON string", `"` + altinnJWT + `"`, true},
		{"not a JWT", "hello", false},
		{"no exp", "eyJhbGciOiJSUzI1NiJ9.eyJpYXQiOjEwMDB9.c2ln", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCounter(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "Bearer mp-token" || r.Method != http.MethodGet {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				fmt.Fprint(w, tc.body)
			})
			cfg := &Config{ClientID: "c", Signer: thePKI(t).x5cSigner(t, 0), Environment: c.env()}
			start := time.Now()
			tok, err := cfg.AltinnToken(context.Background(), "mp-token")
			if !tc.ok {
				if !errors.Is(err, ErrBadResponse) {
					t.Errorf("err = %v, want ErrBadResponse", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tok.ExpiresIn != 600 || tok.Expiry.Sub(start) < 599*time.Second || !strings.HasPrefix(tok.AccessToken, "eyJ") {
				t.Errorf("token = %+v", tok)
			}
		})
	}
	var none Config
	none.Environment = Environment{Issuer: "https://x/", TokenEndpoint: "https://x/token"}
	if _, err := none.AltinnToken(context.Background(), "t"); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("no exchange URL: %v", err)
	}
}
