package emulator_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
)

// A client with a registered key asks for a token with a kid grant.
func ExampleNewServer() {
	clientKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv := emulator.NewServer(emulator.Config{
		Clients: []emulator.Client{{
			ID:        "my-client",
			OrgNumber: "910000001",
			Scopes:    []string{"test:read"},
			Keys:      map[string]crypto.PublicKey{"my-key": &clientKey.PublicKey},
		}},
	})
	defer srv.Close()

	now := time.Now()
	grant := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"aud":   srv.Issuer(), // a string, with the trailing slash
		"iss":   "my-client",
		"scope": "test:read",
		"iat":   now.Unix(),
		"exp":   now.Add(time.Minute).Unix(),
		"jti":   uuid.NewString(),
	})
	grant.Header["kid"] = "my-key"
	assertion, _ := grant.SignedString(clientKey)

	resp, err := http.PostForm(srv.TokenURL(), url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
		"assertion":  {assertion},
	})
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var tok struct {
		TokenType string `json:"token_type"`
		ExpiresIn int    `json:"expires_in"`
		Scope     string `json:"scope"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	fmt.Println(resp.Status, tok.TokenType, tok.ExpiresIn, tok.Scope)

	// The same grant again is refused: the MP code ends error_uri.
	resp, err = http.PostForm(srv.TokenURL(), url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
		"assertion":  {assertion},
	})
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error string `json:"error"`
		URI   string `json:"error_uri"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	fmt.Println(resp.Status, e.Error, path.Base(e.URI))
	// Output:
	// 200 OK Bearer 120 test:read
	// 400 Bad Request invalid_grant MP-012
}

// In a test, NewTest starts the emulator, logs through t.Logf and closes it
// when the test ends. Faults make it misbehave.
func ExampleNewTest() {
	_ = func(t *testing.T) {
		clientKey, _ := rsa.GenerateKey(rand.Reader, 2048)
		srv := emulator.NewTest(t, emulator.Config{
			Clients: []emulator.Client{{
				ID:        "my-client",
				OrgNumber: "910000001",
				Scopes:    []string{"test:read"},
				Keys:      map[string]crypto.PublicKey{"my-key": &clientKey.PublicKey},
			}},
		})
		srv.FailNext(2, http.StatusServiceUnavailable) // a client must retry, with new grants

		// ... point the client under test at srv.TokenURL() and get a token ...

		if got := srv.Stats().Issued; got != 1 {
			t.Errorf("issued %d tokens, want 1", got)
		}
	}
}
