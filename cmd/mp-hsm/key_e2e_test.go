//go:build cgo

package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/softhsm"
)

// TestE2EKeyLifecycle makes a key on the card, asks for its certificate,
// imports the certificate the test CA issues, and gets a token with it.
func TestE2EKeyLifecycle(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	srv := fx.emulator(t)
	env := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card")

	res := runCLI(t, env, "key", "generate", "--label", "Rotated", "--id", "0c", "--output", "json")
	e2eWantOK(t, res)
	var gen generatedJSON
	if err := json.Unmarshal([]byte(res.stdout), &gen); err != nil {
		t.Fatalf("key generate --output json: %v\n%s", err, res)
	}
	if gen.ID != "0c" || gen.Label != "Rotated" || gen.Type != "rsa:2048" || len(gen.Kid) != 43 {
		t.Errorf("key generate printed %+v", gen)
	}
	res = runCLI(t, env, "jwk", "--key-id", "0c")
	e2eWantOK(t, res)
	if !strings.Contains(res.stdout, gen.Kid) {
		t.Errorf("jwk of the new key lacks the kid key generate printed (%s):\n%s", gen.Kid, res.stdout)
	}

	// Refusals, before anything is generated: a taken label, a taken id.
	e2eWantFail(t, runCLI(t, env, "key", "generate", "--label", "Rotated"), exitUsage, `label "Rotated" is taken`, "--label")
	e2eWantFail(t, runCLI(t, env, "key", "generate", "--label", "Fresh", "--id", "01"), exitUsage, "id 01 is taken")
	e2eWantFail(t, runCLI(t, env, "key", "generate", "--label", "Fresh", "--type", "rsa:1024"), exitUsage, "--type")
	e2eWantFail(t, runCLI(t, env, "key", "generate"), exitUsage, "--label")

	// The certificate request, signed on the card.
	org := softhsm.DefaultOrgNumber
	res = runCLI(t, env, "key", "csr", "--key-id", "0c", "--org-number", org, "--org-name", "Test AS", "--common-name", "Test AS mp-hsm")
	e2eWantOK(t, res)
	b, _ := pem.Decode([]byte(res.stdout))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("key csr: no CERTIFICATE REQUEST PEM:\n%s", res)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("the request's signature does not verify: %v", err)
	}
	res = runCLI(t, env, "jwk", "--key-id", "0c", "--pem")
	e2eWantOK(t, res)
	pb, _ := pem.Decode([]byte(res.stdout))
	pub, err := x509.ParsePKIXPublicKey(pb.Bytes)
	if err != nil || !csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Errorf("the request's public key is not the generated key's (%v)", err)
	}
	s := csr.Subject
	var orgID string
	for _, n := range s.Names {
		if n.Type.Equal(asn1.ObjectIdentifier{2, 5, 4, 97}) {
			orgID, _ = n.Value.(string)
		}
	}
	if s.CommonName != "Test AS mp-hsm" || strings.Join(s.Organization, ",") != "Test AS" || strings.Join(s.Country, ",") != "NO" ||
		s.SerialNumber != org || orgID != "NTRNO-"+org {
		t.Errorf("request subject %v (organizationIdentifier %q)", s, orgID)
	}
	e2eWantFail(t, runCLI(t, env, "key", "csr", "--key-id", "0c", "--org-number", "123", "--org-name", "X"), exitUsage, "--org-number")

	// A certificate for no key on the card is refused, and nothing is written.
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	stray, err := fx.ca.IssueLeaf(&other.PublicKey, softhsm.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	strayFile := writePEMCerts(t, stray, fx.ca.Intermediate)
	e2eWantFail(t, runCLI(t, env, "key", "import-cert", strayFile), exitUsage, "holds the public key of no key on the token", "nothing written")

	// The issued certificate, with its issuer, beside the key.
	leaf, err := fx.ca.IssueLeaf(csr.PublicKey, softhsm.LeafOptions{Usage: softhsm.Authentication})
	if err != nil {
		t.Fatal(err)
	}
	res = runCLI(t, env, "key", "import-cert", writePEMCerts(t, leaf, fx.ca.Intermediate))
	e2eWantOK(t, res)
	if !strings.Contains(res.stdout, "beside key id 0c") {
		t.Errorf("import-cert output: %s", res.stdout)
	}
	e2eWantFail(t, runCLI(t, env, "key", "import-cert", writePEMCerts(t, leaf)), exitUsage, "already on the token")

	// The grant carries the new certificate in x5c, and Maskinporten takes it.
	res = runCLI(t, env, e2eTokenArgs(srv, "--key-id", "0c")...)
	e2eWantOK(t, res)
	e2eAccessToken(t, srv, res.stdout)
	res = runCLI(t, env, "grant", "--key-id", "0c", "--client-id", e2eClient, "--scope", e2eScopeRead, "--well-known", srv.MetadataURL())
	e2eWantOK(t, res)
	raw, err := base64.RawURLEncoding.DecodeString(strings.SplitN(res.stdout, ".", 2)[0])
	var hdr struct{ X5c []string }
	if err == nil {
		err = json.Unmarshal(raw, &hdr)
	}
	if err != nil || len(hdr.X5c) == 0 || hdr.X5c[0] != base64.StdEncoding.EncodeToString(leaf.Raw) {
		t.Errorf("grant header %s (%v): want x5c starting with the imported certificate", raw, err)
	}
}

// writePEMCerts writes certs as PEM to a file of the test and returns its path.
func writePEMCerts(t testing.TB, certs ...*x509.Certificate) string {
	t.Helper()
	var b strings.Builder
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	p := filepath.Join(t.TempDir(), "certs.pem")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
