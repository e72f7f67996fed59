package grant_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
)

// newExampleEmulator starts a Maskinporten emulator with one client whose
// key is registered by kid, and returns it with a signer over that key.
func newExampleEmulator() (*emulator.Server, signer.Signer) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	srv := emulator.NewServer(emulator.Config{Clients: []emulator.Client{{
		ID:        "my-client",
		OrgNumber: "974760673",
		Scopes:    []string{"example:read"},
		Keys:      map[string]crypto.PublicKey{"my-kid": key.Public()},
	}}})
	sig, err := signer.NewFileSigner(key, nil) // a smart card signer in real use
	if err != nil {
		log.Fatal(err)
	}
	return srv, sig
}

func ExampleConfig_TokenSource() {
	srv, sig := newExampleEmulator()
	defer srv.Close()

	cfg := &grant.Config{
		ClientID: "my-client",
		Signer:   sig,
		KeyID:    "my-kid", // or leave empty to send the certificate chain as x5c
		Environment: grant.Environment{ // grant.Test or grant.Prod in real use
			Issuer:        srv.Issuer(),
			TokenEndpoint: srv.TokenURL(),
		},
	}
	ts := cfg.TokenSource(context.Background(), grant.Request{Scopes: []string{"example:read"}})
	tok, err := ts.Token()
	if err != nil {
		log.Fatal(err)
	}
	again, _ := ts.Token() // cached until 30 s before expiry
	fmt.Println(tok.Type(), tok == again)

	// A refusal can be told from an outage.
	_, err = cfg.TokenSource(context.Background(), grant.Request{Scopes: []string{"example:write"}}).Token()
	var te *grant.TokenError
	if errors.As(err, &te) && errors.Is(err, grant.ErrRefused) {
		fmt.Println(te.StatusCode, te.Code, te.MPCode)
	}
	// Output:
	// Bearer true
	// 400 invalid_scope MP-200
}

func ExampleConfig_Client() {
	srv, sig := newExampleEmulator()
	defer srv.Close()

	// An API that wants a bearer token.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "hello, machine")
	}))
	defer api.Close()

	ctx := context.Background()
	env, err := grant.Discover(ctx, nil, srv.MetadataURL(), false)
	if err != nil {
		log.Fatal(err)
	}
	cfg := &grant.Config{ClientID: "my-client", Signer: sig, KeyID: "my-kid", Environment: env}
	client := cfg.Client(ctx, grant.Request{Scopes: []string{"example:read"}})

	resp, err := client.Get(api.URL)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 hello, machine
}

func ExampleConfig_Exchange() {
	srv, sig := newExampleEmulator()
	defer srv.Close()

	cfg := &grant.Config{ClientID: "my-client", Signer: sig, KeyID: "my-kid",
		Environment: grant.Environment{Issuer: srv.Issuer(), TokenEndpoint: srv.TokenURL()}}
	// One new grant, one request, no cache: what mp-hsm token does.
	tok, err := cfg.Exchange(context.Background(), grant.Request{Scopes: []string{"example:read"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.TokenType, tok.Scope, tok.ExpiresIn)
	// Output: Bearer example:read 120
}

func ExampleEnvironmentForCertificate() {
	leaf := &x509.Certificate{Issuer: pkix.Name{CommonName: "Buypass Class 3 Test4 CA G2 ST Business"}}
	env, err := grant.EnvironmentForCertificate(leaf)
	fmt.Println(env.Name, env.Issuer, err)
	// Output: test https://test.maskinporten.no/ <nil>
}
