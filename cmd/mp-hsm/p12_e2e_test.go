package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// TestE2EP12 gets a token with a soft enterprise certificate (PKCS#12)
// instead of a token, and refuses a wrong password with exit 3.
func TestE2EP12(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueLeaf(&key.PublicKey, softhsm.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const password = "p12-sentinel-password"
	data, err := pkcs12.Modern.Encode(key, leaf, []*x509.Certificate{ca.Intermediate}, password)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p12 := filepath.Join(dir, "soft.p12")
	if err := os.WriteFile(p12, data, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := emulator.NewTest(t, emulator.Config{
		Roots:   []*x509.Certificate{ca.Root},
		Clients: []emulator.Client{{ID: "p12-client", OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{"p12:read"}}},
	})
	args := []string{"token", "--p12", p12, "--client-id", "p12-client", "--scope", "p12:read", "--well-known", srv.MetadataURL()}

	res := runCLI(t, []string{"MP_HSM_P12_PASSWORD=" + password}, args...)
	if res.code != 0 || !strings.HasPrefix(res.stdout, "eyJ") {
		t.Fatalf("token with --p12: %v", res)
	}
	res = runCLI(t, []string{"MP_HSM_P12_PASSWORD=wrong"}, args...)
	if res.code != exitToken || !strings.Contains(res.stderr, "password") {
		t.Fatalf("wrong PKCS#12 password: want exit 3 naming the password, got %v", res)
	}
	if strings.Contains(res.stderr+res.stdout, password) {
		t.Fatal("the PKCS#12 password appears in the output")
	}
}
