//go:build cgo

package p11_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"golang.org/x/oauth2"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/softhsm"
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

// uriExampleWorld makes what ExampleOpenURI is given: a SoftHSM2 token
// with a key and a test enterprise certificate, a file with its PIN, the
// URI of it all, and an emulator that knows the client. They last until
// the process ends (softhsm.Main removes the token store).
func uriExampleWorld() (ctx context.Context, uri, clientID, metadataURL string) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		log.Fatal(err)
	}
	tok, err := softhsm.NewToken(softhsm.Options{})
	if err != nil {
		log.Fatal(err)
	}
	pub, err := tok.GenerateRSAKey(2048, softhsm.KeyOptions{ID: []byte{1}, Label: "Authentication"})
	if err != nil {
		log.Fatal(err)
	}
	leaf, err := ca.IssueLeaf(pub, softhsm.LeafOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range []*x509.Certificate{leaf, ca.Intermediate} {
		if err := tok.PutCertificate(c, c.SubjectKeyId, c.Subject.CommonName); err != nil {
			log.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "mp-hsm-example-")
	if err != nil {
		log.Fatal(err)
	}
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(tok.PIN+"\n"), 0o600); err != nil {
		log.Fatal(err)
	}
	srv := emulator.NewServer(emulator.Config{
		Roots: []*x509.Certificate{ca.Root},
		Clients: []emulator.Client{{ID: "my-client", OrgNumber: softhsm.DefaultOrgNumber,
			Scopes: []string{"altinn:serviceowner"}}},
	})
	u := pkcs11uri.URI{Token: tok.Label, ID: []byte{1}, ModuleName: "softhsm2", PINSource: "file:" + pinFile}
	uri = u.String() // pkcs11:token=mp-hsm-test-1;id=%01?module-name=softhsm2&pin-source=file:/tmp/...
	return context.Background(), uri, "my-client", srv.MetadataURL()
}
