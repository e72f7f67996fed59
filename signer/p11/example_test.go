//go:build cgo

package p11_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// Calls an API with Maskinporten tokens signed on a smart card or HSM. The
// body after its first line is the README's library snippet
// (TestREADMEExample keeps the two the same). Here the card is a SoftHSM2
// token with a test enterprise certificate, its PIN is in a file, and
// Maskinporten is the emulator, found by its metadata URL; in real use
// module is the card's PKCS#11 module (such as
// /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so) and metadataURL is empty
// for grant.Test (or grant.Prod).
func ExampleOpen() {
	ctx, module, tokenLabel, pinFile, clientID, metadataURL, apiURL := exampleWorld()

	s, err := p11.Open(p11.Config{
		Module: module,
		Token:  hsm.TokenSelector{Label: tokenLabel},
		PIN:    hsm.PINFile(pinFile), // read when the token asks: one C_Login, never retried
	})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	// Maskinporten: grant.Test or grant.Prod, or the environment that a
	// metadata URL names, such as the one `mp-hsm emulate` prints.
	env := grant.Test
	if metadataURL != "" {
		if env, err = grant.Discover(ctx, nil, metadataURL, false); err != nil {
			log.Fatal(err)
		}
	}
	cfg := &grant.Config{ClientID: clientID, Signer: s, Environment: env}
	client := cfg.Client(ctx, grant.Request{Scopes: []string{"altinn:serviceowner"}})
	resp, err := client.Get(apiURL) // Bearer token cached and refreshed
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status)
	// Output: 200 OK
}

// exampleWorld makes what ExampleOpen's program is given: a SoftHSM2 token
// with an RSA key and a test enterprise certificate, a file holding its
// PIN, a Maskinporten emulator that knows the client, and an API that
// wants one of its tokens. The servers and files last until the process
// ends (softhsm.Main removes the token store).
func exampleWorld() (ctx context.Context, module, tokenLabel, pinFile, clientID, metadataURL, apiURL string) {
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
	for _, c := range []struct {
		cert  *x509.Certificate
		id    []byte
		label string
	}{{leaf, []byte{1}, "Authentication"}, {ca.Intermediate, ca.Intermediate.SubjectKeyId, "CA"}} {
		if err := tok.PutCertificate(c.cert, c.id, c.label); err != nil {
			log.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "mp-hsm-example-")
	if err != nil {
		log.Fatal(err)
	}
	pinFile = filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(tok.PIN+"\n"), 0o600); err != nil {
		log.Fatal(err)
	}
	srv := emulator.NewServer(emulator.Config{
		Roots: []*x509.Certificate{ca.Root},
		Clients: []emulator.Client{{ID: "my-client", OrgNumber: softhsm.DefaultOrgNumber,
			Scopes: []string{"altinn:serviceowner"}}},
	})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		_, err := jwt.Parse(bearer, func(*jwt.Token) (any, error) { return srv.PublicKey(), nil })
		if !ok || err != nil {
			http.Error(w, "no valid token", http.StatusUnauthorized)
		}
	}))
	return context.Background(), tok.Module, tok.Label, pinFile, "my-client", srv.MetadataURL(), api.URL
}

// TestREADMEExample: the README's library snippet is ExampleOpen's body
// after its first line (which makes the test's card and Maskinporten), so
// that the snippet runs in go test and cannot go stale.
func TestREADMEExample(t *testing.T) {
	const file = "example_test.go"
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var body *ast.BlockStmt
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "ExampleOpen" {
			body = fd.Body
		}
	}
	if body == nil || len(body.List) < 2 {
		t.Fatal("no ExampleOpen with a setup line and a body in " + file)
	}
	code := string(src[fset.Position(body.List[1].Pos()).Offset:fset.Position(body.Rbrace).Offset])
	code, _, _ = strings.Cut(code, "// Output:")
	var lines []string
	for l := range strings.Lines(strings.TrimSpace(code)) {
		lines = append(lines, strings.TrimPrefix(l, "\t"))
	}
	want := strings.Join(lines, "")

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "## The Go library\n")
	_, after, ok2 := strings.Cut(after, "```go\n")
	got, _, ok3 := strings.Cut(after, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md has no ```go block under \"## The Go library\"")
	}
	if got = strings.TrimSpace(got); got != want {
		t.Errorf("README.md's library snippet differs from ExampleOpen's body; make it:\n%s\n\nREADME.md has:\n%s", want, got)
	}
}
