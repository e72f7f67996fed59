//go:build cgo

package main

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// TestE2EKeyGenerateAtOnce: two key generate --label X (or --id) at once:
// under the token's change lock exactly one succeeds and the other is
// refused as taken. Each run has its own XDG_RUNTIME_DIR here, so the
// lock directory is named for both, as a user's shared one would be.
func TestE2EKeyGenerateAtOnce(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	env := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card", "MP_HSM_LOCK_DIR="+filepath.Join(t.TempDir(), "locks"))
	for _, args := range [][]string{
		{"key", "generate", "--label", "Twin"},
		{"key", "generate", "--label", "Twin-%d", "--id", "77"},
	} {
		var wg sync.WaitGroup
		res := make([]cliResult, 2)
		for i := range res {
			a := append([]string(nil), args...)
			for j := range a {
				a[j] = strings.Replace(a[j], "%d", string(rune('a'+i)), 1)
			}
			wg.Go(func() { res[i] = runCLI(t, env, a...) })
		}
		wg.Wait()
		ok, taken := 0, 0
		for _, r := range res {
			switch {
			case r.code == 0:
				ok++
			case r.code == exitUsage && strings.Contains(r.stderr, "is taken"):
				taken++
			default:
				t.Errorf("%v: %s", args, r)
			}
		}
		if ok != 1 || taken != 1 {
			t.Errorf("%v twice at once: %d succeeded, %d refused as taken; want one each", args, ok, taken)
		}
	}
}

// TestE2EImportCertChecksFirst: import-cert checks the whole file before it
// writes: an expired certificate (without --force), the same leaf twice, a
// second certificate for a key from another issuer (without --replace).
func TestE2EImportCertChecksFirst(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	env := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card")
	certsOnCard := func() []listCert {
		t.Helper()
		res := runCLI(t, env, "list", "--output", "json")
		e2eWantOK(t, res)
		var out listOutput
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
			t.Fatal(err)
		}
		for _, s := range out.Slots {
			if s.Token != nil && s.Token.Label == "e2e-card" {
				return s.Token.Certificates
			}
		}
		t.Fatal("no e2e-card in list")
		return nil
	}
	before := len(certsOnCard())

	res := runCLI(t, env, "key", "generate", "--label", "Imp", "--id", "0c", "--output", "json")
	e2eWantOK(t, res)
	pub := publicOf(t, env, "0c")

	expired, err := fx.ca.IssueLeaf(pub, softhsm.LeafOptions{NotBefore: time.Now().AddDate(-2, 0, 0), NotAfter: time.Now().AddDate(-1, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	e2eWantFail(t, runCLI(t, env, "key", "import-cert", writePEMCerts(t, expired, fx.ca.Intermediate)), exitUsage, "not now", "--force", "nothing written")
	if n := len(certsOnCard()); n != before {
		t.Fatalf("%d certificates after the refusal, want %d", n, before)
	}

	// The same leaf twice in one file: written once, whole.
	leaf, err := fx.ca.IssueLeaf(pub, softhsm.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res = runCLI(t, env, "key", "import-cert", writePEMCerts(t, leaf, leaf))
	e2eWantOK(t, res)
	if strings.Count(res.stdout, "wrote certificate") != 1 || len(certsOnCard()) != before+1 {
		t.Fatalf("the same leaf twice: %s", res)
	}

	// A certificate for the same key from another CA: refused; with
	// --replace, written and the other removed, so that token sends it.
	other, err := softhsm.NewCA(softhsm.EnvProd)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.IssueLeaf(pub, softhsm.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	file := writePEMCerts(t, foreign, other.Intermediate)
	e2eWantFail(t, runCLI(t, env, "key", "import-cert", file), exitUsage, "already has certificate", "--replace", "nothing written")
	if n := len(certsOnCard()); n != before+1 {
		t.Fatalf("%d certificates after the refusal, want %d", n, before+1)
	}
	res = runCLI(t, env, "key", "import-cert", "--replace", file)
	e2eWantOK(t, res)
	if !strings.Contains(res.stdout, "removed certificate") {
		t.Errorf("import-cert --replace: %s", res)
	}
	var forKey []string
	for _, c := range certsOnCard() {
		if c.ID == "0c" {
			forKey = append(forKey, c.Issuer)
		}
	}
	if len(forKey) != 1 || forKey[0] != other.Intermediate.Subject.CommonName {
		t.Errorf("key 0c's certificates after --replace are from %v, want only %q", forKey, other.Intermediate.Subject.CommonName)
	}
}

// publicOf is the public key of the key with CKA_ID id, from mp-hsm jwk --pem.
func publicOf(t *testing.T, env []string, id string) crypto.PublicKey {
	t.Helper()
	res := runCLI(t, env, "jwk", "--key-id", id, "--pem")
	e2eWantOK(t, res)
	b, _ := pem.Decode([]byte(res.stdout))
	if b == nil {
		t.Fatalf("jwk --pem: no PEM\n%s", res)
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestE2EControlCharacters: values from the card and the API are escaped
// in list and admin keys list; labels and CSR fields with control
// characters, or longer than X.520 allows, are refused.
func TestE2EControlCharacters(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	evil := softhsm.New(t, softhsm.Options{Label: "evil", PIN: sentinelPIN})
	evil.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}, Label: "Auth\n  09  Fake\x1b[2J"})
	env := e2eSetenv(doctorTokenEnv(evil), "MP_HSM_TOKEN_LABEL=evil")
	res := runCLI(t, env, "list")
	e2eWantOK(t, res)
	if strings.Contains(res.stdout, "\x1b") || strings.Contains(res.stdout, "\n  09  Fake") || !strings.Contains(res.stdout, `Auth\n  09  Fake\x1b[2J`) {
		t.Errorf("list shows the label raw:\n%s", res.stdout)
	}

	cenv := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card")
	e2eWantFail(t, runCLI(t, cenv, "key", "generate", "--label", "a\nb"), exitUsage, `--label "a\nb" holds the control character \n`)
	e2eWantFail(t, runCLI(t, cenv, "key", "generate", "--label", strings.Repeat("L", 65)), exitUsage, "more than the 64 allowed")
	org := softhsm.DefaultOrgNumber
	for _, tc := range []struct{ flag, value, want string }{
		{"--common-name", "Test\x1b[31m", `control character \x1b`},
		{"--common-name", "Test\nO=Evil", `control character \n`},
		{"--common-name", strings.Repeat("C", 10000), "10000 characters, more than the 64 allowed"},
		{"--org-name", strings.Repeat("O", 65), "more than the 64 allowed"},
		{"--serial-number", "1\r2", `control character \r`},
	} {
		res := runCLI(t, cenv, "key", "csr", "--org-number", org, "--org-name", "Test AS", tc.flag, tc.value)
		e2eWantFail(t, res, exitUsage, tc.flag, tc.want)
		if len(res.stderr) > 600 {
			t.Errorf("%s of %d characters: %d bytes of error", tc.flag, len(tc.value), len(res.stderr))
		}
	}

	// A kid with a newline and an escape sequence, registered by someone
	// else: admin keys list escapes it.
	cfg := fx.emulatorConfig(t)
	cfg.AdminClient = e2eAdminClient
	cfg.Clients = append(cfg.Clients, emulator.Client{ID: e2eAdminClient, OrgNumber: org,
		Scopes: []string{emulator.ScopeAdminRead, emulator.ScopeAdminWrite}})
	cfg.Clients[0].Keys["k\n00000000000000000000000000000000000000000  RS256  RSA  4096\x1b]0;x\x07"] = fx.cardPub
	srv := emulator.NewTest(t, cfg)
	aenv := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card", "MP_HSM_ADMIN_CLIENT_ID="+e2eAdminClient,
		"MP_HSM_ADMIN_API="+srv.AdminAPIURL(), "MP_HSM_WELL_KNOWN="+srv.MetadataURL())
	res = runCLI(t, aenv, "admin", "keys", "list", "--client-id", e2eClient)
	e2eWantOK(t, res)
	if strings.Count(res.stdout, "\n") != 4 || strings.ContainsAny(res.stdout, "\x1b\x07") || !strings.Contains(res.stdout, `k\n0000`) {
		t.Errorf("admin keys list shows the kid raw:\n%s", res.stdout)
	}
}

// TestE2EAdminAPIPlainHTTP: the self-service token is sent over https, or
// http to loopback, only: another http URL is refused before the PIN.
func TestE2EAdminAPIPlainHTTP(t *testing.T) {
	t.Parallel()
	_, _, env, _ := adminFixture(t)
	for _, args := range [][]string{
		{"admin", "keys", "list", "--client-id", e2eClient},
		{"admin", "keys", "remove", "--client-id", e2eClient, "--kid", "x"},
		{"admin", "keys", "rotate", "--client-id", e2eClient, "--label", "R", "--scope", e2eScopeRead},
	} {
		res := runCLI(t, e2eSetenv(env, "MP_HSM_ADMIN_API=http://api.test.samarbeid.digdir.no/api/v1/", "MP_HSM_PIN"), args...)
		e2eWantFail(t, res, exitUsage, "--admin-api", "http is allowed only for loopback hosts")
	}
}

// TestDoctorLineEscaped: a doctor message quoting a card's or an API's
// value stays one line, without escape sequences, and bounded.
func TestDoctorLineEscaped(t *testing.T) {
	var b strings.Builder
	writeDoctorLine(&b, doctor.Result{Check: "certificate", Status: doctor.Fail,
		Message: "\"Evil\nOK    key  all good\x1b[2J\"" + strings.Repeat("x", 10000), Hint: "fix\rit"}, false)
	got := b.String()
	if strings.Count(got, "\n") != 1 || strings.ContainsAny(got, "\x1b\r") || !strings.Contains(got, `Evil\nOK`) || len(got) > 2*maxDoctorText+100 {
		t.Errorf("doctor line: %q", got)
	}
}
