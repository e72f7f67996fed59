//go:build cgo

// Command provision creates the SoftHSM2 store for the mp-hsm demo:
//
//	go run ./softhsm/cmd/provision -dir .demo
//
// It makes a store in DIR (DIR/softhsm2.conf, token files in DIR/tokens)
// with one token, labelled "mp-hsm-demo", that looks like a Buypass
// enterprise card from the test environment:
//
//   - id 01, label "Authentication": an RSA 2048 key with an authentication
//     certificate (keyUsage digitalSignature, extKeyUsage clientAuth), the key
//     to sign Maskinporten grants with;
//   - the issuing CA certificate "Buypass Class 3 Test4 CA G2 HT Business",
//     with its subject key identifier as id;
//   - id 02, label "Signing": an RSA 2048 key with CKA_ALWAYS_AUTHENTICATE
//     and a signing certificate (keyUsage nonRepudiation only).
//
// It writes DIR/root.pem (the trust anchor for the Maskinporten emulator),
// DIR/pin (mode 0600, the user PIN) and DIR/client.env (the settings to use
// the token, as KEY=value lines), and prints a summary without the PIN.
//
// Running it again replaces DIR, but only a DIR it made itself (or an empty
// one): any other existing directory is refused.
package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/mp-hsm/mp-hsm/softhsm"
)

// Demo token contents.
const (
	tokenLabel = "mp-hsm-demo"
	orgName    = "MP-HSM DEMO AS"
	authLabel  = "Authentication"
	signLabel  = "Signing"
)

var (
	authID = []byte{0x01}
	signID = []byte{0x02}
)

// marker is the file that shows provision made a directory.
const marker = ".mp-hsm-demo"

func main() {
	dir := flag.String("dir", ".demo", "directory of the demo store; replaced if provision made it before")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "provision: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if err := provision(os.Stdout, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "provision:", err)
		os.Exit(1)
	}
}

// provision creates the demo store in dir and reports to w.
func provision(w io.Writer, dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := reset(dir); err != nil {
		return err
	}
	store, err := softhsm.OpenStore(dir)
	if err != nil {
		return err
	}
	tok, err := store.InitToken(tokenLabel, softhsm.DefaultPIN, softhsm.DefaultSOPIN)
	if err != nil {
		return err
	}
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		return err
	}

	authPub, err := tok.GenerateRSAKey(2048, softhsm.KeyOptions{ID: authID, Label: authLabel})
	if err != nil {
		return err
	}
	auth, err := ca.IssueLeaf(authPub, softhsm.LeafOptions{OrgName: orgName, Usage: softhsm.Authentication})
	if err != nil {
		return err
	}
	signPub, err := tok.GenerateRSAKey(2048, softhsm.KeyOptions{ID: signID, Label: signLabel, AlwaysAuthenticate: true})
	if err != nil {
		return err
	}
	sign, err := ca.IssueLeaf(signPub, softhsm.LeafOptions{OrgName: orgName, Usage: softhsm.Signing})
	if err != nil {
		return err
	}
	intermediate := ca.Intermediate
	for _, c := range []struct {
		cert  *x509.Certificate
		id    []byte
		label string
	}{
		{auth, authID, authLabel},
		{intermediate, intermediate.SubjectKeyId, intermediate.Subject.CommonName},
		{sign, signID, signLabel},
	} {
		if err := tok.PutCertificate(c.cert, c.id, c.label); err != nil {
			return err
		}
	}

	rootFile := filepath.Join(dir, "root.pem")
	pinFile := filepath.Join(dir, "pin")
	envFile := filepath.Join(dir, "client.env")
	if err := os.WriteFile(rootFile, ca.RootPEM(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(pinFile, []byte(tok.PIN), 0o600); err != nil {
		return err
	}
	env := []struct{ key, value string }{
		{"SOFTHSM2_CONF", tok.Config},
		{"MP_HSM_MODULE", tok.Module},
		{"MP_HSM_TOKEN_LABEL", tok.Label},
		{"MP_HSM_TOKEN_SERIAL", tok.Serial},
		{"MP_HSM_KEY_ID", fmt.Sprintf("%x", authID)},
		{"MP_HSM_KEY_URI", fmt.Sprintf("pkcs11:token=%s;id=%%%02x;type=private", tok.Label, authID[0])},
		{"MP_HSM_SIGNING_KEY_ID", fmt.Sprintf("%x", signID)},
		{"MP_HSM_PIN_FILE", pinFile},
		{"MP_HSM_ROOT_CA", rootFile},
		{"MP_HSM_ORG_NUMBER", softhsm.DefaultOrgNumber},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# mp-hsm demo token, written by softhsm/cmd/provision. To use it from a shell:\n#\tset -a; . %s; set +a\n", shellQuote(envFile))
	for _, e := range env {
		fmt.Fprintf(&b, "%s=%s\n", e.key, shellQuote(e.value))
	}
	if err := os.WriteFile(envFile, []byte(b.String()), 0o644); err != nil {
		return err
	}

	fmt.Fprintf(w, "SoftHSM2 store   %s (SOFTHSM2_CONF=%s)\n", dir, tok.Config)
	fmt.Fprintf(w, "token            %q, serial %s, module %s\n", tok.Label, tok.Serial, tok.Module)
	fmt.Fprintf(w, "organisation     %s, NTRNO-%s\n", orgName, softhsm.DefaultOrgNumber)
	fmt.Fprintf(w, "key 01           RSA 2048 %q with certificate: %s\n", authLabel, describe(auth))
	fmt.Fprintf(w, "key 02           RSA 2048 %q, always-authenticate, with certificate: %s\n", signLabel, describe(sign))
	fmt.Fprintf(w, "CA certificate   %q (id %x)\n", intermediate.Subject.CommonName, intermediate.SubjectKeyId)
	fmt.Fprintf(w, "trust anchor     %s (%s)\n", rootFile, ca.Root.Subject.CommonName)
	fmt.Fprintf(w, "PIN              in %s\n", pinFile)
	fmt.Fprintf(w, "settings         %s\n", envFile)
	return nil
}

// describe summarises a leaf's purpose and validity.
func describe(c *x509.Certificate) string {
	usage := "nonRepudiation"
	if c.KeyUsage&x509.KeyUsageDigitalSignature != 0 {
		usage = "digitalSignature, clientAuth"
	}
	return fmt.Sprintf("%s, valid to %s", usage, c.NotAfter.UTC().Format("2006-01-02"))
}

// reset makes dir an empty directory holding only the marker. An existing
// dir is removed only if it is empty or has the marker.
func reset(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, marker)); err != nil {
			return fmt.Errorf("%s exists and was not made by provision; remove it or choose another -dir", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, marker), []byte("made by softhsm/cmd/provision; it may replace this directory\n"), 0o644)
}

// shellQuote quotes s for a POSIX shell unless it needs no quoting.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-:=%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
