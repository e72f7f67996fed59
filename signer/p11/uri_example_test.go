//go:build cgo

package p11_test

import (
	"context"
	"fmt"
	"log"

	"golang.org/x/oauth2"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/signer/p11"
)

// From one pkcs11: URI to an oauth2.TokenSource. The URI names the module
// (module-name, found where p11-kit looks), the token, the key and the
// file that holds the PIN; here the token is SoftHSM2's and Maskinporten
// is the emulator, found by its metadata URL (in real use: grant.Test or
// grant.Prod).
func ExampleOpenURI() {
	ctx, uri, clientID, metadataURL := uriExampleWorld()

	s, err := p11.OpenURI(uri) // one C_Login, with the PIN from pin-source
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	env, err := grant.Discover(ctx, nil, metadataURL, false)
	if err != nil {
		log.Fatal(err)
	}
	cfg := &grant.Config{ClientID: clientID, Signer: s, Environment: env}
	var ts oauth2.TokenSource = cfg.TokenSource(ctx, grant.Request{Scopes: []string{"altinn:serviceowner"}})
	tok, err := ts.Token() // cached until shortly before it expires
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.TokenType, tok.Valid())
	// Output: Bearer true
}

// uriExampleWorld makes what ExampleOpenURI is given from ExampleOpen's
// world: the URI of its token, key and PIN file, and its emulator.
func uriExampleWorld() (ctx context.Context, uri, clientID, metadataURL string) {
	ctx, _, tokenLabel, pinFile, clientID, metadataURL, _ := exampleWorld()
	u := pkcs11uri.URI{Token: tokenLabel, ID: []byte{1}, ModuleName: "softhsm2", PINSource: "file:" + pinFile}
	return ctx, u.String(), clientID, metadataURL // pkcs11:token=...;id=%01?module-name=softhsm2&pin-source=file:/tmp/...
}
