//go:build cgo

package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
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
	const password = "p12-sentinel-password"
	ca, key, p12 := softP12(t, password)
	srv := emulator.NewTest(t, emulator.Config{
		Roots: []*x509.Certificate{ca.Root},
		Clients: []emulator.Client{{ID: "p12-client", OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{"p12:read"}},
			{ID: "p12-admin", OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{emulator.ScopeAdminRead}}},
		AdminClient: "p12-admin",
	})
	args := []string{"token", "--p12", p12, "--client-id", "p12-client", "--scope", "p12:read", "--well-known", srv.MetadataURL()}

	res := runCLI(t, []string{"MP_HSM_P12_PASSWORD=" + password}, args...)
	if res.code != 0 || !strings.HasPrefix(res.stdout, "eyJ") {
		t.Fatalf("token with --p12: %v", res)
	}
	// key csr and admin keys need no token: they sign with the PKCS#12 key.
	res = runCLI(t, []string{"MP_HSM_P12_PASSWORD=" + password}, "key", "csr", "--p12", p12, "--org-number", softhsm.DefaultOrgNumber, "--org-name", "P12 AS")
	if b, _ := pem.Decode([]byte(res.stdout)); res.code != 0 || b == nil {
		t.Fatalf("key csr --p12: %v", res)
	} else if csr, err := x509.ParseCertificateRequest(b.Bytes); err != nil || csr.CheckSignature() != nil || !key.PublicKey.Equal(csr.PublicKey) {
		t.Errorf("key csr --p12: a request that does not verify with the file's key (%v)", err)
	}
	res = runCLI(t, []string{"MP_HSM_P12_PASSWORD=" + password}, "admin", "keys", "list", "--p12", p12, "--client-id", "p12-client",
		"--admin-client-id", "p12-admin", "--admin-api", srv.AdminAPIURL(), "--well-known", srv.MetadataURL())
	if res.code != 0 || !strings.Contains(res.stdout, "no registered keys") {
		t.Errorf("admin keys list --p12: %v", res)
	}
	res = runCLI(t, []string{"MP_HSM_P12_PASSWORD=wrong"}, args...)
	if res.code != exitToken || !strings.Contains(res.stderr, "password") {
		t.Fatalf("wrong PKCS#12 password: want exit 3 naming the password, got %v", res)
	}
	if strings.Contains(res.stderr+res.stdout, password) {
		t.Fatal("the PKCS#12 password appears in the output")
	}
}

// softP12 writes a soft enterprise certificate from a new test PKI to a
// PKCS#12 file under password, and returns the CA, the key and the path.
func softP12(t *testing.T, password string) (*softhsm.CA, *rsa.PrivateKey, string) {
	t.Helper()
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
	data, err := pkcs12.Modern.Encode(key, leaf, []*x509.Certificate{ca.Intermediate}, password)
	if err != nil {
		t.Fatal(err)
	}
	p12 := filepath.Join(t.TempDir(), "soft.p12")
	if err := os.WriteFile(p12, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return ca, key, p12
}
