//go:build cgo

package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// Each provision runs in its own process, as with go run: a process has
// one SoftHSM2 store, and replacing the store under a loaded module is not
// something the command does.
func TestMain(m *testing.M) {
	if os.Getenv("MP_HSM_PROVISION_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := testexec.Command(t, 2*time.Minute, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "MP_HSM_PROVISION_MAIN=1")
	res := testexec.Run(t, cmd)
	var err error
	if res.Code != 0 {
		err = fmt.Errorf("exit %d", res.Code)
		t.Logf("provision %s: %v\n%s", strings.Join(args, " "), err, res.Stderr)
	}
	return res.Stdout, err
}

func TestProvision(t *testing.T) {
	module, err := softhsm.ModulePath()
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "demo")
	for i := range 2 { // the second run replaces the first
		out, err := run(t, "-dir", dir)
		if err != nil {
			t.Fatalf("run %d failed", i+1)
		}
		if strings.Contains(out, softhsm.DefaultPIN) {
			t.Errorf("the output shows the PIN:\n%s", out)
		}
	}

	fi, err := os.Stat(filepath.Join(dir, "pin"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("pin file mode %v, want 0600", fi.Mode().Perm())
	}
	if pin, _ := os.ReadFile(filepath.Join(dir, "pin")); string(pin) != softhsm.DefaultPIN {
		t.Errorf("pin file holds %q", pin)
	}
	root, _ := os.ReadFile(filepath.Join(dir, "root.pem"))
	if b, _ := pem.Decode(root); b == nil {
		t.Error("root.pem holds no PEM block")
	} else if c, err := x509.ParseCertificate(b.Bytes); err != nil || !c.IsCA {
		t.Errorf("root.pem: %v, CA %v", err, c != nil && c.IsCA)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "client.env"))
	if !bytes.Contains(env, []byte("SOFTHSM2_CONF="+filepath.Join(dir, "softhsm2.conf")+"\n")) {
		t.Errorf("client.env lacks SOFTHSM2_CONF:\n%s", env)
	}

	// Another process sees exactly one demo token with the objects.
	cmd := testexec.Command(t, 0, testexec.Tool(t, "pkcs11-tool", "opensc"), "--module", module, "--token-label", "mp-hsm-demo", "--login", "--pin", softhsm.DefaultPIN, "--list-objects")
	cmd.Env = testexec.Env(t.TempDir(), "SOFTHSM2_CONF="+filepath.Join(dir, "softhsm2.conf"))
	res := testexec.Run(t, cmd)
	if res.Code != 0 {
		t.Fatalf("pkcs11-tool: %s", res)
	}
	out := res.Stdout
	for obj, want := range map[string]int{
		"Private Key Object": 2, "Public Key Object": 2, "Certificate Object": 3,
		"always authenticate": 1, "label:      Authentication": 3, "label:      Signing": 3,
	} {
		if got := strings.Count(string(out), obj); got != want {
			t.Errorf("pkcs11-tool lists %q %d times, want %d:\n%s", obj, got, want, out)
		}
	}
}

func TestProvisionRefusesForeignDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "-dir", dir); err == nil {
		t.Error("provision replaced a directory it did not make")
	}
	if _, err := os.Stat(filepath.Join(dir, "keep")); err != nil {
		t.Errorf("the directory was touched: %v", err)
	}
}
