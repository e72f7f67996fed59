//go:build cgo

package main

// End-to-end tests: the built mp-hsm binary, run as a user runs it, against
// SoftHSM2 tokens (package softhsm) and the Maskinporten emulator (package
// grant/emulator). Every run goes through runCLI, which gives the binary a
// controlled environment and checks, on every run, that neither the PIN nor
// a JWT (grant or token) reaches stderr, and that the PIN never reaches
// stdout.
//
// Helpers other tests in this package may use: binary(t) builds the binary
// once per process; runCLI runs it; e2e(t) returns the shared tokens and CA.

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// TestMain is the one of package main: softhsm.Main removes the process
// store of SoftHSM2 tokens, e2eCleanup the binary and the token snapshot.
func TestMain(m *testing.M) {
	os.Exit(e2eCleanup(softhsm.Main(m)))
}

// e2eCleanup removes what the end-to-end tests left in the temporary
// directory and returns code.
func e2eCleanup(code int) int {
	for _, dir := range []string{builtBinary.dir, noCgoBinary.dir, bareBuilt.dir, e2eShared.golden} {
		if dir != "" {
			os.RemoveAll(dir)
		}
	}
	return code
}

// builtBinary is the mp-hsm binary, built once per test process.
var builtBinary struct {
	once sync.Once
	dir  string // removed by TestMain
	path string
	err  error
}

// binary returns the path of the mp-hsm binary, built from this package
// with `go build` on first use (without -race, as users get it).
func binary(t testing.TB) string {
	t.Helper()
	b := &builtBinary
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "mp-hsm-e2e-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "mp-hsm")
		cmd := testexec.Command(t, 5*time.Minute, "go", "build", "-o", b.path, ".")
		cmd.Env = os.Environ()
		if res := testexec.Run(t, cmd); res.Code != 0 {
			b.err = fmt.Errorf("go build: exit %d\n%s", res.Code, res.Stderr)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// The client and PINs of the end-to-end tests. The PINs are sentinels:
// runCLI fails the test if one of them appears in any output.
const (
	e2eClient     = "e2e-client"
	sentinelPIN   = "Sentinel-PIN-7f3a91"
	e2eWrongPIN   = "Wrong-PIN-c4e2b8"
	e2eScopeRead  = "e2e:read"
	e2eScopeWrite = "e2e:write"
)

// e2eDelegatingOrg may name the e2e client's organisation in consumer_org.
var e2eDelegatingOrg = softhsm.ValidOrgNumber(7)

// cliResult is what one run of the binary did.
type cliResult struct {
	args           []string
	stdout, stderr string
	code           int
	maxRSSKiB      int64
}

func (r cliResult) String() string {
	return fmt.Sprintf("mp-hsm %s\nexit %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// cliOpts are the less common settings of a run.
type cliOpts struct {
	env     []string      // KEY=value, the environment beside testexec.Env's
	stdin   string        // the child's standard input
	stdout  *os.File      // if set, the child's stdout instead of a buffer
	timeout time.Duration // the run's deadline; 0 means testexec.DefaultTimeout
}

// runCLI runs the binary with env (KEY=value; later entries win) as its
// environment, beside testexec.Env's PATH, HOME, TMPDIR and XDG directories
// in a temporary directory of the test. Nothing else is inherited: no
// MP_HSM_* or MASKINPORTEN_* variable, no SOFTHSM2_CONF, no user
// configuration. Stdin is empty and not a terminal. The run has a deadline
// (see testexec). It fails t if the sentinel PINs or the MP_HSM_PIN of env
// appear on stdout or stderr, or a JWT appears on stderr.
func runCLI(t testing.TB, env []string, args ...string) cliResult {
	t.Helper()
	return runCLIWith(t, cliOpts{env: env}, args...)
}

var e2eJWTRE = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.`)

func runCLIWith(t testing.TB, o cliOpts, args ...string) cliResult {
	t.Helper()
	cmd := testexec.Command(t, o.timeout, binary(t), args...)
	cmd.Env = testexec.Env(t.TempDir(), o.env...)
	cmd.Stdin = strings.NewReader(o.stdin)
	if o.stdout != nil {
		cmd.Stdout = o.stdout
	}
	r := testexec.Run(t, cmd)
	res := cliResult{args: args, stdout: r.Stdout, stderr: r.Stderr, code: r.Code}
	if r.Rusage != nil {
		res.maxRSSKiB = r.Rusage.Maxrss // kilobytes on Linux
	}
	secrets := []string{sentinelPIN, e2eWrongPIN}
	for _, kv := range o.env {
		if pin, ok := strings.CutPrefix(kv, "MP_HSM_PIN="); ok && len(pin) >= 4 {
			secrets = append(secrets, pin)
		}
	}
	for _, secret := range secrets {
		if strings.Contains(res.stdout, secret) || strings.Contains(res.stderr, secret) {
			t.Errorf("a PIN appears in the output:\n%s", res)
		}
	}
	if e2eJWTRE.MatchString(res.stderr) {
		t.Errorf("a JWT (grant or token) appears on stderr:\n%s", res)
	}
	return res
}

// e2eSetenv returns env with the KEY=value pairs kv set (replacing any earlier
// value) and the keys in kv given without "=" removed.
func e2eSetenv(env []string, kv ...string) []string {
	out := slices.Clone(env)
	for _, p := range kv {
		key, _, _ := strings.Cut(p, "=")
		out = slices.DeleteFunc(out, func(e string) bool { return strings.HasPrefix(e, key+"=") })
		if strings.Contains(p, "=") {
			out = append(out, p)
		}
	}
	return out
}

// e2eFixture holds the tokens all end-to-end tests share. They are made
// once per process; the tests only read them, except that wrong-PIN tests
// use their own token.
type e2eFixture struct {
	ca *softhsm.CA

	// card is like an enterprise card: key 01 "Authentication" with an
	// authentication certificate, key 02 "Signing" (always-authenticate)
	// with a signing certificate, and the issuing CA.
	card     *softhsm.Token
	cardCert *x509.Certificate
	cardPub  *rsa.PublicKey

	// twoKeys has two authentication keys, 0a and 0b: no default choice.
	twoKeys *softhsm.Token

	// wrongPINTok takes the wrong PINs.
	wrongPINTok *softhsm.Token

	emuKey crypto.Signer // the emulators' token-signing key

	// golden is a copy of the three tokens' directories, taken once they
	// were made; conf is the store's softhsm2.conf, whose token directory
	// is tokenDir. See env.
	golden, conf, tokenDir string
	dirs                   map[string]string // token serial -> its directory's name
}

var e2eShared struct {
	once   sync.Once
	fx     *e2eFixture
	golden string // removed by TestMain
}

// e2e returns the shared fixture, making it on first use. It skips the test
// when SoftHSM2 is not installed (unless CI is set), as softhsm.New does.
func e2e(t testing.TB) *e2eFixture {
	t.Helper()
	if _, err := softhsm.ModulePath(); errors.Is(err, softhsm.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skipf("%v (with CI set, this fails the test)", err)
	}
	e2eShared.once.Do(func() { e2eShared.fx = e2eNewFixture(t) })
	if e2eShared.fx == nil {
		t.Fatal("the end-to-end fixture could not be made (see the first test that tried)")
	}
	return e2eShared.fx
}

func e2eNewFixture(t testing.TB) *e2eFixture {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	fx := &e2eFixture{ca: ca}
	if fx.emuKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	writeKey := func(tok *softhsm.Token, id byte, label string, usage softhsm.Usage) (*rsa.PublicKey, *x509.Certificate) {
		pub := tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{id}, Label: label, AlwaysAuthenticate: usage == softhsm.Signing})
		cert, err := ca.IssueLeaf(pub, softhsm.LeafOptions{Usage: usage})
		if err != nil {
			t.Fatal(err)
		}
		tok.WriteCertificate(t, cert, []byte{id}, label)
		return pub, cert
	}
	writeCA := func(tok *softhsm.Token) {
		tok.WriteCertificate(t, ca.Intermediate, ca.Intermediate.SubjectKeyId, ca.Intermediate.Subject.CommonName)
	}

	fx.card = softhsm.New(t, softhsm.Options{Label: "e2e-card", PIN: sentinelPIN})
	fx.cardPub, fx.cardCert = writeKey(fx.card, 0x01, "Authentication", softhsm.Authentication)
	writeKey(fx.card, 0x02, "Signing", softhsm.Signing)
	writeCA(fx.card)

	fx.twoKeys = softhsm.New(t, softhsm.Options{Label: "e2e-two-keys", PIN: sentinelPIN})
	writeKey(fx.twoKeys, 0x0a, "First", softhsm.Authentication)
	writeKey(fx.twoKeys, 0x0b, "Second", softhsm.Authentication)
	writeCA(fx.twoKeys)

	fx.wrongPINTok = softhsm.New(t, softhsm.Options{Label: "e2e-wrong-pin", PIN: sentinelPIN})
	writeKey(fx.wrongPINTok, 0x01, "Authentication", softhsm.Authentication)
	writeCA(fx.wrongPINTok)

	if err := fx.snapshot(); err != nil {
		t.Fatal(err)
	}
	return fx
}

// snapshot copies the directories of the fixture's tokens out of the
// process store into a new directory, fx.golden.
func (fx *e2eFixture) snapshot() error {
	conf, err := os.ReadFile(fx.card.Config)
	if err != nil {
		return err
	}
	fx.conf = string(conf)
	for l := range strings.Lines(fx.conf) {
		if k, v, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == "directories.tokendir" {
			fx.tokenDir = strings.TrimSpace(v)
		}
	}
	if fx.tokenDir == "" {
		return fmt.Errorf("no directories.tokendir in %s", fx.card.Config)
	}
	if fx.golden, err = os.MkdirTemp("", "mp-hsm-e2e-tokens-"); err != nil {
		return err
	}
	e2eShared.golden = fx.golden
	entries, err := os.ReadDir(fx.tokenDir)
	if err != nil {
		return err
	}
	fx.dirs = map[string]string{}
	for _, tok := range []*softhsm.Token{fx.card, fx.twoKeys, fx.wrongPINTok} {
		// SoftHSM2 names a token's directory by a UUID that ends in the
		// token's serial.
		i := slices.IndexFunc(entries, func(e os.DirEntry) bool {
			return e.IsDir() && strings.HasSuffix(strings.ReplaceAll(e.Name(), "-", ""), tok.Serial)
		})
		if i < 0 {
			return fmt.Errorf("no directory for token serial %s in %s", tok.Serial, fx.tokenDir)
		}
		name := entries[i].Name()
		fx.dirs[tok.Serial] = name
		if err := os.CopyFS(filepath.Join(fx.golden, name), os.DirFS(filepath.Join(fx.tokenDir, name))); err != nil {
			return err
		}
	}
	return nil
}

// env is the environment to reach tok with its PIN in MP_HSM_PIN, plus kv
// (see e2eSetenv).
//
// Each env has its own SoftHSM2 store, a fresh copy of the fixture's
// tokens: SoftHSM2 rewrites a token's file at every login, and its file
// store is not safe for processes that log in to the same token at once
// (they see CKR_GENERAL_ERROR, a token without a PIN, or no token). The
// copies keep the parallel runs, and the tests in this process that use
// the process store, apart. Slot IDs are the same in every copy: SoftHSM2
// derives them from the token serial.
func (fx *e2eFixture) env(t testing.TB, tok *softhsm.Token, kv ...string) []string {
	t.Helper()
	return fx.store(t, []*softhsm.Token{fx.card, fx.twoKeys, fx.wrongPINTok}, tok, kv...)
}

// envAlone is env with a store that holds tok alone (and SoftHSM2's empty
// slot).
func (fx *e2eFixture) envAlone(t testing.TB, tok *softhsm.Token, kv ...string) []string {
	t.Helper()
	return fx.store(t, []*softhsm.Token{tok}, tok, kv...)
}

func (fx *e2eFixture) store(t testing.TB, toks []*softhsm.Token, tok *softhsm.Token, kv ...string) []string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	for _, tk := range toks {
		name := fx.dirs[tk.Serial]
		if err := os.CopyFS(filepath.Join(dir, "tokens", name), os.DirFS(filepath.Join(fx.golden, name))); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte(strings.Replace(fx.conf, fx.tokenDir, filepath.Join(dir, "tokens"), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return e2eSetenv([]string{"SOFTHSM2_CONF=" + conf, "MP_HSM_MODULE=" + tok.Module, "MP_HSM_PIN=" + tok.PIN}, kv...)
}

// emulator starts a Maskinporten emulator that trusts the test CA and knows
// the e2e client, with the card's authentication key registered under its
// thumbprint for kid grants.
func (fx *e2eFixture) emulator(t testing.TB) *emulator.Server {
	t.Helper()
	return emulator.NewTest(t, fx.emulatorConfig(t))
}

func (fx *e2eFixture) emulatorConfig(t testing.TB) emulator.Config {
	t.Helper()
	kid, err := signer.Thumbprint(fx.cardPub)
	if err != nil {
		t.Fatal(err)
	}
	return emulator.Config{
		Roots: []*x509.Certificate{fx.ca.Root},
		Key:   fx.emuKey,
		Clients: []emulator.Client{{
			ID: e2eClient, OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{e2eScopeRead, e2eScopeWrite},
			Keys: map[string]crypto.PublicKey{kid: fx.cardPub}, DelegatedBy: []string{e2eDelegatingOrg},
		}},
	}
}

// e2eTokenArgs are the arguments of the everyday token command against srv.
func e2eTokenArgs(srv *emulator.Server, extra ...string) []string {
	return append([]string{"token", "--token-label", "e2e-card", "--client-id", e2eClient,
		"--scope", e2eScopeRead, "--well-known", srv.MetadataURL()}, extra...)
}

// slotOf finds the slot ID tok has in a new process, with `mp-hsm list`.
func (fx *e2eFixture) slotOf(t testing.TB, tok *softhsm.Token) uint {
	t.Helper()
	res := runCLI(t, fx.env(t, tok, "MP_HSM_PIN"), "list", "--output", "json")
	if res.code != 0 {
		t.Fatalf("list: %s", res)
	}
	var out listJSON
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("list --output json: %v\n%s", err, res)
	}
	for _, s := range out.Slots {
		if s.Token != nil && s.Token.Serial == tok.Serial {
			return s.ID
		}
	}
	t.Fatalf("list shows no slot with token serial %s:\n%s", tok.Serial, res)
	return 0
}

// e2eWantOK fails the test unless the run exited 0 with an empty stderr.
func e2eWantOK(t testing.TB, res cliResult) {
	t.Helper()
	if res.code != 0 || res.stderr != "" {
		t.Fatalf("want exit 0 and nothing on stderr:\n%s", res)
	}
}

// e2eWantFail fails the test unless the run exited code with nothing on stdout
// and every one of want in stderr.
func e2eWantFail(t testing.TB, res cliResult, code int, want ...string) {
	t.Helper()
	if res.code != code {
		t.Errorf("exit %d, want %d:\n%s", res.code, code, res)
		return
	}
	if res.stdout != "" {
		t.Errorf("stdout not empty on failure:\n%s", res)
	}
	for _, w := range want {
		if !strings.Contains(res.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, res)
		}
	}
}

// e2eAccessToken checks that s is one access token of srv, alone on a line,
// and returns its claims.
func e2eAccessToken(t testing.TB, srv *emulator.Server, s string) jwt.MapClaims {
	t.Helper()
	tok, ok := strings.CutSuffix(s, "\n")
	if !ok || strings.ContainsAny(tok, "\n \t") {
		t.Fatalf("want the token alone and a newline, got %q", s)
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return srv.PublicKey(), nil },
		jwt.WithValidMethods([]string{"RS256"})); err != nil {
		t.Fatalf("access token does not verify with the emulator's key: %v", err)
	}
	if claims["client_id"] != e2eClient {
		t.Errorf("access token client_id = %v, want %s", claims["client_id"], e2eClient)
	}
	return claims
}

func TestE2ETokenChoosingTheKey(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	srv := fx.emulator(t)
	slot := fx.slotOf(t, fx.card)
	base := []string{"token", "--client-id", e2eClient, "--scope", e2eScopeRead, "--well-known", srv.MetadataURL()}
	cases := []struct {
		name string
		args []string
		env  []string
	}{
		{"slot", []string{"--slot", fmt.Sprint(slot)}, nil},
		{"slot and key id", []string{"--slot", fmt.Sprint(slot), "--key-id", "01"}, nil},
		{"token label", []string{"--token-label", "e2e-card"}, nil},
		{"token serial and key label", []string{"--token-serial", fx.card.Serial, "--key-label", "Authentication"}, nil},
		{"URI", []string{"--key", "pkcs11:token=e2e-card;id=%01"}, nil},
		{"URI with slot-id and type", []string{"--key", fmt.Sprintf("pkcs11:slot-id=%d;object=Authentication;type=private", slot)}, nil},
		{"MP_HSM_SLOT", nil, []string{fmt.Sprintf("MP_HSM_SLOT=%d", slot)}},
		{"MP_HSM_KEY", nil, []string{"MP_HSM_KEY=pkcs11:token=e2e-card;id=%01"}},
		{"MP_HSM_TOKEN_SERIAL and MP_HSM_KEY_ID", nil, []string{"MP_HSM_TOKEN_SERIAL=" + fx.card.Serial, "MP_HSM_KEY_ID=01"}},
		{"MP_HSM_TOKEN_LABEL and MP_HSM_KEY_LABEL", nil, []string{"MP_HSM_TOKEN_LABEL=e2e-card", "MP_HSM_KEY_LABEL=Authentication"}},
	}
	t.Run("runs", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				res := runCLI(t, fx.env(t, fx.card, tc.env...), append(slices.Clone(base), tc.args...)...)
				e2eWantOK(t, res)
				claims := e2eAccessToken(t, srv, res.stdout)
				if claims["client_amr"] != "virksomhetssertifikat" || claims["scope"] != e2eScopeRead {
					t.Errorf("claims %v: want client_amr virksomhetssertifikat (an x5c grant), scope %s", claims, e2eScopeRead)
				}
			})
		}
	})
	if got := srv.Stats().Issued; got != len(cases) {
		t.Errorf("emulator issued %d tokens, want %d", got, len(cases))
	}
}

func TestE2ETokenKid(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	srv := fx.emulator(t)
	kid, _ := signer.Thumbprint(fx.cardPub)
	res := runCLI(t, fx.env(t, fx.card), e2eTokenArgs(srv, "--kid", kid)...)
	e2eWantOK(t, res)
	if c := e2eAccessToken(t, srv, res.stdout); c["client_amr"] != "private_key_jwt" {
		t.Errorf("client_amr = %v, want private_key_jwt (a kid grant)", c["client_amr"])
	}
	res = runCLI(t, fx.env(t, fx.card, "MP_HSM_KID="+kid), e2eTokenArgs(srv)...)
	e2eWantOK(t, res)
	e2eAccessToken(t, srv, res.stdout)

	res = runCLI(t, fx.env(t, fx.card), e2eTokenArgs(srv, "--kid", "not-registered")...)
	e2eWantFail(t, res, exitRefused, "HTTP 400", "Unknown key identifier")

	// The grant names the key by kid alone and verifies with the key.
	res = runCLI(t, fx.env(t, fx.card), "grant", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead, "--kid", kid)
	e2eWantOK(t, res)
	g, err := jwt.Parse(strings.TrimSuffix(res.stdout, "\n"), func(*jwt.Token) (any, error) { return fx.cardPub, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(grant.Test.Issuer), jwt.WithIssuer(e2eClient))
	if err != nil {
		t.Fatalf("kid grant does not verify with the card's key: %v", err)
	}
	if _, hasX5C := g.Header["x5c"]; hasX5C || g.Header["kid"] != kid {
		t.Errorf("kid grant header %v: want kid %s and no x5c", g.Header, kid)
	}
}

func TestE2ETokenOutputs(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	srv := fx.emulator(t)

	before := time.Now().Truncate(time.Second)
	res := runCLI(t, fx.env(t, fx.card), e2eTokenArgs(srv, "--output", "json", "--scope", e2eScopeRead+" "+e2eScopeWrite)...)
	e2eWantOK(t, res)
	var body map[string]any
	if err := json.Unmarshal([]byte(res.stdout), &body); err != nil {
		t.Fatalf("--output json: %v\n%s", err, res)
	}
	for _, k := range []string{"access_token", "token_type", "expires_in", "scope", "expires_at"} {
		if _, ok := body[k]; !ok {
			t.Errorf("--output json lacks %q: %s", k, res.stdout)
		}
	}
	at, _ := body["access_token"].(string)
	e2eAccessToken(t, srv, at+"\n")
	if body["token_type"] != "Bearer" || body["scope"] != e2eScopeRead+" "+e2eScopeWrite || body["expires_in"] != 120.0 {
		t.Errorf("--output json: %s", res.stdout)
	}
	exp, err := time.Parse(time.RFC3339, fmt.Sprint(body["expires_at"]))
	if err != nil {
		t.Errorf("expires_at is not RFC 3339: %v", err)
	} else if d := exp.Sub(before); d < 119*time.Second || d > 130*time.Second {
		t.Errorf("expires_at %s is %s after the run started, want about expires_in (120s)", exp, d)
	}

	res = runCLI(t, fx.env(t, fx.card, "MP_HSM_OUTPUT=header"), e2eTokenArgs(srv)...)
	e2eWantOK(t, res)
	tok, ok := strings.CutPrefix(res.stdout, "Authorization: Bearer ")
	if !ok {
		t.Fatalf("--output header: %q", res.stdout)
	}
	e2eAccessToken(t, srv, tok)

	res = runCLI(t, fx.env(t, fx.card), e2eTokenArgs(srv, "--output", "token")...)
	e2eWantOK(t, res)
	e2eAccessToken(t, srv, res.stdout)
}

func TestE2ETokenAltinn(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	srv := fx.emulator(t)
	for _, tc := range []struct {
		name string
		args []string
		env  []string
	}{
		{"flags", []string{"--altinn", "--altinn-exchange", srv.AltinnExchangeURL()}, nil},
		{"environment", nil, []string{"MP_HSM_ALTINN=true", "MP_HSM_ALTINN_EXCHANGE=" + srv.AltinnExchangeURL()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runCLI(t, fx.env(t, fx.card, tc.env...), e2eTokenArgs(srv, tc.args...)...)
			e2eWantOK(t, res)
			claims := e2eAccessToken(t, srv, res.stdout)
			if claims["urn:altinn:orgNumber"] != softhsm.DefaultOrgNumber || claims["urn:altinn:authenticatemethod"] != "maskinporten" {
				t.Errorf("not an Altinn token: %v", claims)
			}
		})
	}
	if st := srv.Stats(); st.AltinnExchanges != 2 || st.Issued != 2 {
		t.Errorf("stats %+v: want 2 Maskinporten tokens and 2 Altinn exchanges", st)
	}

	// Without an exchange URL (the emulator's metadata names none), the
	// command fails before it asks for a Maskinporten token.
	res := runCLI(t, fx.env(t, fx.card), e2eTokenArgs(srv, "--altinn")...)
	e2eWantFail(t, res, exitUsage, "--altinn-exchange")
	if st := srv.Stats(); st.TokenRequests != 2 {
		t.Errorf("%d token requests, want 2: --altinn without an exchange URL must fail before asking", st.TokenRequests)
	}
}

// e2eGrant verifies a grant's signature with the leaf of its x5c (which
// must be the card's certificate, followed by the issuing CA) and returns
// its header and claims.
func e2eGrant(t testing.TB, fx *e2eFixture, s string) (map[string]any, jwt.MapClaims) {
	t.Helper()
	g, ok := strings.CutSuffix(s, "\n")
	if !ok || strings.ContainsAny(g, "\n \t") {
		t.Fatalf("want the grant alone and a newline, got %q", s)
	}
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(g, claims, func(tok *jwt.Token) (any, error) {
		x5c, ok := tok.Header["x5c"].([]any)
		if !ok || len(x5c) == 0 {
			return nil, fmt.Errorf("x5c %v is not a non-empty array", tok.Header["x5c"])
		}
		var chain []*x509.Certificate
		for _, v := range x5c {
			der, err := base64.StdEncoding.DecodeString(fmt.Sprint(v))
			if err != nil {
				return nil, fmt.Errorf("x5c element not standard base64: %w", err)
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, err
			}
			chain = append(chain, c)
		}
		if !chain[0].Equal(fx.cardCert) {
			return nil, fmt.Errorf("x5c leaf is %s, not the card's certificate", chain[0].Subject)
		}
		if len(chain) < 2 || !chain[1].Equal(fx.ca.Intermediate) {
			return nil, errors.New("x5c does not continue with the issuing CA")
		}
		return chain[0].PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}))
	if err != nil {
		t.Fatalf("grant does not verify with the x5c leaf: %v", err)
	}
	if _, ok := tok.Header["kid"]; ok {
		t.Errorf("grant header has both x5c and kid: %v", tok.Header)
	}
	return tok.Header, claims
}

func e2eClaimNames(c jwt.MapClaims) []string {
	var names []string
	for k := range c {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

func TestE2EGrant(t *testing.T) {
	t.Parallel()
	fx := e2e(t)

	// The environment comes from the certificate's issuing CA (a test CA),
	// and nothing goes over the network.
	start := time.Now().Unix()
	res := runCLI(t, fx.env(t, fx.card), "grant", "--token-label", "e2e-card", "--client-id", e2eClient,
		"--scope", e2eScopeRead, "--scope", e2eScopeWrite+" "+e2eScopeRead)
	e2eWantOK(t, res)
	_, claims := e2eGrant(t, fx, res.stdout)
	if got, want := e2eClaimNames(claims), []string{"aud", "exp", "iat", "iss", "jti", "scope"}; !slices.Equal(got, want) {
		t.Errorf("grant claims %v, want exactly %v", got, want)
	}
	if claims["aud"] != grant.Test.Issuer || claims["iss"] != e2eClient || claims["scope"] != e2eScopeRead+" "+e2eScopeWrite {
		t.Errorf("grant claims %v", claims)
	}
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	if int64(iat) < start-1 || int64(iat) > time.Now().Unix()+1 || exp-iat != 60 {
		t.Errorf("iat %v, exp %v: want iat now and exp - iat = 60 (the default lifetime)", iat, exp)
	}

	// Every request flag from its MP_HSM_* variable; jti is new each time.
	pid := e2ePID(t)
	env := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card", "MP_HSM_CLIENT_ID="+e2eClient, "MP_HSM_ENV=test",
		"MP_HSM_SCOPE="+e2eScopeWrite, "MP_HSM_RESOURCE=https://api.example.no/", "MP_HSM_CONSUMER_ORG="+e2eDelegatingOrg,
		"MP_HSM_PID="+pid, "MP_HSM_LIFETIME=120s", "MP_HSM_ALG=RS256")
	res2 := runCLI(t, env, "grant")
	e2eWantOK(t, res2)
	_, claims2 := e2eGrant(t, fx, res2.stdout)
	if got, want := e2eClaimNames(claims2), []string{"aud", "consumer_org", "exp", "iat", "iss", "jti", "pid", "resource", "scope"}; !slices.Equal(got, want) {
		t.Errorf("grant claims %v, want exactly %v", got, want)
	}
	res3, ok := claims2["resource"].([]any)
	if !ok || len(res3) != 1 || res3[0] != "https://api.example.no/" {
		t.Errorf("resource = %v, want an array of the one URL", claims2["resource"])
	}
	if claims2["consumer_org"] != e2eDelegatingOrg || claims2["pid"] != pid || claims2["scope"] != e2eScopeWrite ||
		claims2["exp"].(float64)-claims2["iat"].(float64) != 120 {
		t.Errorf("grant claims %v", claims2)
	}
	if claims["jti"] == claims2["jti"] {
		t.Errorf("two grants share jti %v", claims["jti"])
	}

	// MASKINPORTEN_CLIENT_ID is the fallback for the client id.
	res4 := runCLI(t, fx.env(t, fx.card, "MASKINPORTEN_CLIENT_ID=from-fallback"), "grant", "--token-label", "e2e-card", "--scope", e2eScopeRead)
	e2eWantOK(t, res4)
	if _, c := e2eGrant(t, fx, res4.stdout); c["iss"] != "from-fallback" {
		t.Errorf("iss = %v, want the MASKINPORTEN_CLIENT_ID value", c["iss"])
	}
	res5 := runCLI(t, fx.env(t, fx.card, "MASKINPORTEN_CLIENT_ID=from-fallback", "MP_HSM_CLIENT_ID=from-mp-hsm"), "grant", "--token-label", "e2e-card", "--scope", e2eScopeRead)
	e2eWantOK(t, res5)
	if _, c := e2eGrant(t, fx, res5.stdout); c["iss"] != "from-mp-hsm" {
		t.Errorf("iss = %v, want MP_HSM_CLIENT_ID to win over MASKINPORTEN_CLIENT_ID", c["iss"])
	}
}

// TestE2EEnvironment runs commands set up by MP_HSM_* variables alone, and
// the default choice of token and key.
func TestE2EEnvironment(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	srv := fx.emulator(t)

	// The everyday call with no flags at all; the only token, and on it
	// the key with the authentication certificate, are chosen.
	res := runCLI(t, fx.envAlone(t, fx.card, "MP_HSM_CLIENT_ID="+e2eClient, "MP_HSM_SCOPE="+e2eScopeRead,
		"MP_HSM_WELL_KNOWN="+srv.MetadataURL(), "MP_HSM_TIMEOUT=20s", "MP_HSM_LOG_LEVEL=error", "MP_HSM_QUIET=true"), "token")
	e2eWantOK(t, res)
	e2eAccessToken(t, srv, res.stdout)
	res = runCLI(t, fx.envAlone(t, fx.card), "grant", "--client-id", e2eClient, "--scope", e2eScopeRead)
	e2eWantOK(t, res)
	e2eGrant(t, fx, res.stdout) // checks that the x5c leaf is key 01's certificate

	// --issuer and --token-endpoint from the environment.
	res = runCLI(t, fx.env(t, fx.card, "MP_HSM_ISSUER="+srv.Issuer(), "MP_HSM_TOKEN_ENDPOINT="+srv.TokenURL(),
		"MP_HSM_TOKEN_LABEL=e2e-card", "MP_HSM_CLIENT_ID="+e2eClient, "MP_HSM_SCOPE="+e2eScopeWrite), "token")
	e2eWantOK(t, res)
	if c := e2eAccessToken(t, srv, res.stdout); c["scope"] != e2eScopeWrite {
		t.Errorf("scope %v, want %s", c["scope"], e2eScopeWrite)
	}

	// A pin-value in MP_HSM_KEY is accepted: the environment is not argv.
	res = runCLI(t, fx.env(t, fx.card, "MP_HSM_PIN", "MP_HSM_KEY=pkcs11:token=e2e-card;id=%01?pin-value="+sentinelPIN),
		"token", "--client-id", e2eClient, "--scope", e2eScopeRead, "--well-known", srv.MetadataURL())
	e2eWantOK(t, res)
	e2eAccessToken(t, srv, res.stdout)

	// The system-user and legacy on-behalf-of claims.
	org := softhsm.ValidOrgNumber(9)
	res = runCLI(t, fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card", "MP_HSM_CLIENT_ID="+e2eClient, "MP_HSM_ENV=test",
		"MP_HSM_SCOPE="+e2eScopeRead, "MP_HSM_SYSTEM_USER_ORG="+org, "MP_HSM_ON_BEHALF_OF=legacy-1"), "grant")
	e2eWantOK(t, res)
	_, claims := e2eGrant(t, fx, res.stdout)
	if claims["iss_onbehalfof"] != "legacy-1" || !strings.Contains(fmt.Sprint(claims["authorization_details"]), "0192:"+org) {
		t.Errorf("grant claims %v: want iss_onbehalfof and the system user's authorization_details", claims)
	}
}

// e2ePID returns an 11-digit number with valid check digits.
func e2ePID(t testing.TB) string {
	for n := 1017000000; n < 1017100000; n++ {
		if s := fmt.Sprintf("%011d", n); grant.ValidPID(s) {
			return s
		}
	}
	t.Fatal("no valid PID found")
	return ""
}

// listJSON is what scripts read from `mp-hsm list --output json`.
type listJSON struct {
	Module string         `json:"module"`
	Slots  []listJSONSlot `json:"slots"`
}

type listJSONSlot struct {
	ID    uint `json:"slot_id"`
	Token *struct {
		Label    string   `json:"label"`
		Serial   string   `json:"serial"`
		Flags    []string `json:"flags"`
		LoggedIn bool     `json:"logged_in"`
		Keys     []struct {
			ID                 string `json:"id"`
			Label              string `json:"label"`
			Type               string `json:"type"`
			Bits               int    `json:"bits"`
			AlwaysAuthenticate bool   `json:"always_authenticate"`
			Authentication     bool   `json:"authentication"`
		} `json:"keys"`
		Certificates []struct {
			ID          string    `json:"id"`
			OrgNumber   string    `json:"org_number"`
			Environment string    `json:"environment"`
			NotAfter    time.Time `json:"not_after"`
			DaysLeft    int       `json:"days_left"`
		} `json:"certificates"`
	} `json:"token"`
}

func TestE2EList(t *testing.T) {
	t.Parallel()
	fx := e2e(t)

	// Without a PIN: the certificates, and a note that the keys need a PIN.
	res := runCLI(t, fx.env(t, fx.card, "MP_HSM_PIN"), "list", "--token-label", "e2e-card")
	e2eWantOK(t, res)
	for _, w := range []string{`token "e2e-card"`, "serial " + fx.card.Serial, "MP_HSM_PIN", "--pin-file",
		"CERT ID", softhsm.DefaultOrgName, softhsm.DefaultOrgNumber, "Buypass Class 3 Test4 CA G2 HT Business", "test"} {
		if !strings.Contains(res.stdout, w) {
			t.Errorf("list without PIN lacks %q:\n%s", w, res.stdout)
		}
	}
	if strings.Contains(res.stdout, "KEY ID") || strings.Contains(res.stdout, "SERIALNUMBER=") {
		t.Errorf("list without PIN shows keys, or a full DN instead of CN and org number:\n%s", res.stdout)
	}

	// With the PIN: the keys too, in a table whose columns line up.
	res = runCLI(t, fx.env(t, fx.card), "list", "--token-label", "e2e-card")
	e2eWantOK(t, res)
	lines := strings.Split(res.stdout, "\n")
	hdr := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, "KEY ID") })
	if hdr < 0 || hdr+2 >= len(lines) {
		t.Fatalf("list with PIN shows no keys:\n%s", res.stdout)
	}
	col := strings.Index(lines[hdr], "LABEL")
	for i, want := range []string{"Authentication", "Signing"} {
		l := lines[hdr+1+i]
		if strings.Index(l, want) != col {
			t.Errorf("key row %q: label %q not under the LABEL column (%d):\n%s", l, want, col, res.stdout)
		}
	}
	if !strings.Contains(lines[hdr+1], "01") || !strings.Contains(lines[hdr+1], "[authentication]") ||
		!strings.Contains(lines[hdr+2], "02") || !strings.Contains(lines[hdr+2], "yes") {
		t.Errorf("key rows:\n%s", res.stdout)
	}

	// JSON, for scripts.
	res = runCLI(t, fx.env(t, fx.card), "list", "--token-label", "e2e-card", "--output", "json")
	e2eWantOK(t, res)
	var out listJSON
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("list --output json: %v\n%s", err, res)
	}
	i := slices.IndexFunc(out.Slots, func(s listJSONSlot) bool { return s.Token != nil && s.Token.Serial == fx.card.Serial })
	if out.Module != fx.card.Module || i < 0 {
		t.Fatalf("list --output json: no token with serial %s in module %s:\n%s", fx.card.Serial, fx.card.Module, res.stdout)
	}
	tok := out.Slots[i].Token
	if !tok.LoggedIn || tok.Label != "e2e-card" || len(tok.Keys) != 2 || len(tok.Certificates) != 3 {
		t.Fatalf("list --output json token: %+v", tok)
	}
	k1, k2 := tok.Keys[0], tok.Keys[1]
	if k1.ID != "01" || !k1.Authentication || k1.AlwaysAuthenticate || k1.Type != "RSA" || k1.Bits != 2048 ||
		k2.ID != "02" || k2.Authentication || !k2.AlwaysAuthenticate {
		t.Errorf("keys %+v", tok.Keys)
	}
	for _, c := range tok.Certificates {
		if c.ID == "01" && (c.OrgNumber != softhsm.DefaultOrgNumber || c.Environment != "test" ||
			!c.NotAfter.Equal(fx.cardCert.NotAfter) || c.DaysLeft < 363 || c.DaysLeft > 365) {
			t.Errorf("certificate 01: %+v", c)
		}
	}
}

func TestE2EJWK(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	env := fx.env(t, fx.card, "MP_HSM_TOKEN_LABEL=e2e-card")
	thumb, err := signer.Thumbprint(fx.cardPub)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": thumb,
		"n": base64.RawURLEncoding.EncodeToString(fx.cardPub.N.Bytes()), "e": "AQAB"}

	res := runCLI(t, env, "jwk")
	e2eWantOK(t, res)
	var got map[string]any
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatalf("jwk: %v\n%s", err, res)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("jwk = %v\nwant %v (kid the RFC 7638 thumbprint)", got, want)
	}
	// The kid is what a kid grant must carry: check the binary's JWK set
	// is accepted by an emulator that knows the key only from it.
	res = runCLI(t, env, "jwk", "--jwks", "--kid", "registered-1")
	e2eWantOK(t, res)
	var set struct{ Keys []map[string]any }
	if err := json.Unmarshal([]byte(res.stdout), &set); err != nil || len(set.Keys) != 1 || set.Keys[0]["kid"] != "registered-1" || set.Keys[0]["n"] != want["n"] {
		t.Errorf("jwk --jwks --kid: %v\n%s", err, res)
	}
	res = runCLI(t, e2eSetenv(env, "MP_HSM_JWKS=true"), "jwk")
	e2eWantOK(t, res)
	if !strings.HasPrefix(res.stdout, `{`) || !strings.Contains(res.stdout, `"keys"`) || !strings.Contains(res.stdout, thumb) {
		t.Errorf("MP_HSM_JWKS=true: %s", res.stdout)
	}

	res = runCLI(t, env, "jwk", "--pem")
	e2eWantOK(t, res)
	b, rest := pem.Decode([]byte(res.stdout))
	if b == nil || b.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("jwk --pem: %q", res.stdout)
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil || !fx.cardPub.Equal(pub) {
		t.Errorf("jwk --pem is not the card's key (%v)", err)
	}

	// The signing key of the card by its id.
	res = runCLI(t, env, "jwk", "--key-id", "02")
	e2eWantOK(t, res)
	if strings.Contains(res.stdout, thumb) {
		t.Errorf("jwk --key-id 02 shows key 01's thumbprint")
	}
}

// TestE2EBadInput runs the bad-input table: each row's exit code and the
// words its message must hold.
func TestE2EBadInput(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	srv := fx.emulator(t)
	dir := t.TempDir()
	good := e2eTokenArgs(srv)
	without := func(flag string) []string {
		i := slices.Index(good, flag)
		return slices.Delete(slices.Clone(good), i, i+2)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		code int
		want []string
	}{
		{"unknown flag", e2eTokenArgs(srv, "--bogus"), nil, exitUsage, []string{"flag provided but not defined: -bogus", "(see mp-hsm token --help)"}},
		{"unknown command", []string{"tokn"}, nil, exitUsage, []string{`no command "tokn"`, "mp-hsm --help"}},
		{"missing scope", without("--scope"), nil, exitUsage, []string{"missing --scope", "MP_HSM_SCOPE"}},
		// No PIN at all: the usage error comes before the token is opened.
		{"missing client id", without("--client-id"), []string{"MP_HSM_PIN"}, exitUsage, []string{"missing --client-id", "MP_HSM_CLIENT_ID"}},
		{"invalid consumer org", e2eTokenArgs(srv, "--consumer-org", "123456789"), nil, exitUsage, []string{"--consumer-org", "123456789", "check digit"}},
		{"invalid pid", e2eTokenArgs(srv, "--pid", "12345678901"), nil, exitUsage, []string{"--pid", "123456*****", "personal identification number"}},
		{"lifetime 0", e2eTokenArgs(srv, "--lifetime", "0s"), nil, exitUsage, []string{"--lifetime 0s", "from 1s to 120s"}},
		{"lifetime 500s", e2eTokenArgs(srv, "--lifetime", "500s"), nil, exitUsage, []string{"--lifetime", "from 1s to 120s"}},
		{"unknown output", e2eTokenArgs(srv, "--output", "yaml"), nil, exitUsage, []string{`--output "yaml"`, "token, json or header"}},
		{"unknown env", without("--well-known"), []string{"MP_HSM_ENV=staging"}, exitUsage, []string{`--env "staging"`, "test or prod"}},
		{"issuer without token endpoint", append(without("--well-known"), "--issuer", srv.Issuer()), nil, exitUsage, []string{"--issuer and --token-endpoint"}},
		{"bad slot", e2eTokenArgs(srv, "--slot", "first"), nil, exitUsage, []string{`--slot "first"`, "mp-hsm list"}},
		{"bad key id", e2eTokenArgs(srv, "--key-id", "zz"), nil, exitUsage, []string{`--key-id "zz"`, "hex"}},
		{"malformed URI", append(without("--token-label"), "--key", "pkcs11:token=e2e-card;id=%zz"), nil, exitUsage, []string{"--key", "percent-encoding"}},
		{"not a URI", append(without("--token-label"), "--key", "token=e2e-card"), nil, exitUsage, []string{"--key", `starts with "pkcs11:"`}},
		{"URI with pin-value", append(without("--token-label"), "--key", "pkcs11:token=e2e-card;id=%01?pin-value="+sentinelPIN), nil, exitUsage, []string{"--key", "MP_HSM_PIN", "--pin-file"}},
		{"URI disagrees with flag", e2eTokenArgs(srv, "--key", "pkcs11:token=other"), nil, exitUsage, []string{"--token-label", "disagree"}},
		{"log level", append([]string{"--log-level", "loud"}, good...), nil, exitUsage, []string{"--log-level", "debug, info, warn or error"}},
		{"emulate without an org number", []string{"emulate", "--client-id", e2eClient}, nil, exitUsage, []string{"--client-id and --org-number"}},
		{"module does not exist", e2eTokenArgs(srv, "--module", filepath.Join(dir, "libnope.so")), nil, exitToken, []string{filepath.Join(dir, "libnope.so"), "module not found"}},
		{"module is not a module", e2eTokenArgs(srv, "--module", "/etc/hostname"), nil, exitToken, []string{"/etc/hostname", "not a PKCS#11 module"}},
		{"slot does not exist", append(without("--token-label"), "--slot", "4000000000"), nil, exitToken, []string{"slot not found", "4000000000", "--slot", `--token-label "e2e-card"`}},
		{"label matches nothing", append(without("--token-label"), "--token-label", "no-such-token"), nil, exitToken, []string{"token not found", `"no-such-token"`, `--token-label "e2e-card"`}},
		{"no token chosen", without("--token-label"), nil, exitToken, []string{"several tokens", `--token-label "e2e-card"`, `--token-label "e2e-two-keys"`}},
		{"key label matches nothing", e2eTokenArgs(srv, "--key-label", "nope"), nil, exitToken, []string{"key not found", `--key-label "Authentication"`, `--key-label "Signing"`}},
		{"two keys and no choice", append(without("--token-label"), "--token-label", "e2e-two-keys"), nil, exitToken,
			[]string{"several keys", `--key-id 0a or --key-label "First"`, `--key-id 0b or --key-label "Second"`}},
		{"no PIN and no terminal", good, []string{"MP_HSM_PIN"}, exitToken, []string{"no PIN", "MP_HSM_PIN", "--pin-file"}},
		{"PIN file missing", good, []string{"MP_HSM_PIN", "MP_HSM_PIN_FILE=" + filepath.Join(dir, "nope")}, exitToken, []string{"PIN file", filepath.Join(dir, "nope"), "does not exist"}},
		{"prod env with a test certificate", append(without("--well-known"), "--env", "prod"), nil, exitToken, []string{"test certificate", "prod"}},
		{"scope not on the client", e2eTokenArgs(srv, "--scope", "e2e:admin"), nil, exitRefused, []string{"HTTP 400", "invalid_scope", "MP-200", "hint:", "Samarbeidsportalen"}},
		{"unknown client", append(without("--client-id"), "--client-id", "no-such-client"), nil, exitRefused, []string{"HTTP 400", "MP-100", "hint:"}},
		{"consumer org not delegated", e2eTokenArgs(srv, "--consumer-org", softhsm.ValidOrgNumber(8)), nil, exitRefused, []string{"HTTP 403", "MP-251"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := runCLI(t, fx.env(t, fx.card, tc.env...), tc.args...)
			e2eWantFail(t, res, tc.code, tc.want...)
			if n := strings.Count(strings.TrimSpace(res.stderr), "\n") + 1; n > 3 {
				t.Errorf("message is %d lines, want at most 3:\n%s", n, res.stderr)
			}
		})
	}
}

// TestE2EWrongPIN checks that a wrong PIN is presented once, never retried,
// and explained with what the token's flags say. The PKCS#11 spy module of
// OpenSC sits between mp-hsm and SoftHSM2 and records every call.
func TestE2EWrongPIN(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	srv := fx.emulator(t)
	args := []string{"token", "--token-label", "e2e-wrong-pin", "--client-id", e2eClient, "--scope", e2eScopeRead, "--well-known", srv.MetadataURL()}
	env := fx.env(t, fx.wrongPINTok, "MP_HSM_PIN="+e2eWrongPIN)

	spy := "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so"
	if _, err := os.Stat(spy); err != nil {
		res := runCLI(t, env, args...)
		e2eWantFail(t, res, exitToken, "PIN incorrect", "not retried", "tries")
		t.Skipf("cannot count C_Login calls without OpenSC's %s", spy)
	}
	log := filepath.Join(t.TempDir(), "spy.log")
	env = e2eSetenv(env, "MP_HSM_MODULE="+spy, "PKCS11SPY="+fx.wrongPINTok.Module, "PKCS11SPY_OUTPUT="+log)
	res := runCLI(t, env, args...)
	e2eWantFail(t, res, exitToken, "PIN incorrect", "one try spent, not retried", "tries", "CKR_PIN_INCORRECT",
		"the PIN came from MP_HSM_PIN")
	calls, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(calls, []byte("C_Login\n")); n != 1 {
		t.Errorf("%d C_Login calls, want exactly 1", n)
	}
	if st := srv.Stats(); st.TokenRequests != 0 {
		t.Errorf("%d token requests after a failed login", st.TokenRequests)
	}
	// The right PIN works again (SoftHSM2 does not lock), and the low PIN
	// count the wrong one left is reported as a warning.
	res = runCLI(t, e2eSetenv(env, "MP_HSM_PIN="+sentinelPIN), args...)
	if res.code != 0 || !strings.Contains(res.stderr, "low PIN count") {
		t.Errorf("want success with a low-PIN-count warning:\n%s", res)
	}
	e2eAccessToken(t, srv, res.stdout)
}

func TestE2EPINFile(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	srv := fx.emulator(t)
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(sentinelPIN+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	private, shared := write("pin", 0o600), write("pin-shared", 0o644)

	res := runCLI(t, fx.env(t, fx.card, "MP_HSM_PIN"), e2eTokenArgs(srv, "--pin-file", private)...)
	e2eWantOK(t, res)
	e2eAccessToken(t, srv, res.stdout)

	res = runCLI(t, fx.env(t, fx.card, "MP_HSM_PIN", "MP_HSM_PIN_FILE="+shared), e2eTokenArgs(srv)...)
	if res.code != 0 || !strings.Contains(res.stderr, "chmod 600") || !strings.Contains(res.stderr, shared) {
		t.Errorf("a group/world-readable PIN file: want success and a warning:\n%s", res)
	}
	e2eAccessToken(t, srv, res.stdout)

	// --quiet silences the warning.
	res = runCLI(t, fx.env(t, fx.card, "MP_HSM_PIN", "MP_HSM_PIN_FILE="+shared), append([]string{"--quiet"}, e2eTokenArgs(srv)...)...)
	e2eWantOK(t, res)

	// The URI's pin-source names a PIN file too.
	res = runCLI(t, fx.env(t, fx.card, "MP_HSM_PIN"), "token", "--key", "pkcs11:token=e2e-card;id=%01?pin-source=file:"+private,
		"--client-id", e2eClient, "--scope", e2eScopeRead, "--well-known", srv.MetadataURL())
	e2eWantOK(t, res)
}

// TestE2EServerFailures covers the answers of a Maskinporten that fails:
// 5xx after retries, no answer at all, and a metadata document without an
// issuer. All are exit 5, "unreachable or failing": the request was fine,
// the server did not give a usable answer.
func TestE2EServerFailures(t *testing.T) {
	t.Parallel()
	fx := e2e(t)

	t.Run("503 three times", func(t *testing.T) {
		t.Parallel()
		srv := fx.emulator(t)
		srv.FailNext(3, 503)
		res := runCLI(t, fx.env(t, fx.card), e2eTokenArgs(srv)...)
		e2eWantFail(t, res, exitUnavailable, "HTTP 503", "after 3 attempts")
		if st := srv.Stats(); st.TokenRequests != 3 || st.Issued != 0 {
			t.Errorf("stats %+v: want 3 requests", st)
		}
	})
	t.Run("503 twice then a token", func(t *testing.T) {
		t.Parallel()
		srv := fx.emulator(t)
		srv.FailNext(2, 503)
		res := runCLI(t, fx.env(t, fx.card), e2eTokenArgs(srv)...)
		e2eWantOK(t, res)
		e2eAccessToken(t, srv, res.stdout)
	})
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + ln.Addr().String()
		ln.Close()
		res := runCLI(t, fx.env(t, fx.card), "token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead,
			"--issuer", url+"/", "--token-endpoint", url+"/token")
		e2eWantFail(t, res, exitUnavailable, url+"/token", "unavailable", "after 3 attempts")
		res = runCLI(t, fx.env(t, fx.card), "token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead,
			"--well-known", url+"/.well-known/oauth-authorization-server")
		e2eWantFail(t, res, exitUnavailable, "--well-known", "unavailable")
	})
	t.Run("metadata without issuer", func(t *testing.T) {
		t.Parallel()
		srv := fx.emulator(t)
		meta := e2eMetadataServer(t, map[string]any{"token_endpoint": srv.TokenURL()})
		res := runCLI(t, fx.env(t, fx.card), "token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead, "--well-known", meta)
		e2eWantFail(t, res, exitUnavailable, "--well-known", "no issuer")
	})
	t.Run("metadata not found", func(t *testing.T) {
		t.Parallel()
		srv := fx.emulator(t)
		res := runCLI(t, fx.env(t, fx.card), "token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead,
			"--well-known", srv.URL+"/no-such-document")
		e2eWantFail(t, res, exitUsage, "--well-known", "HTTP 404", "check the metadata URL")
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		srv := fx.emulator(t)
		srv.SetLatency(10 * time.Second)
		res := runCLI(t, fx.env(t, fx.card), e2eTokenArgs(srv, "--timeout", "500ms")...)
		e2eWantFail(t, res, exitUnavailable, "unavailable")
	})
}

// e2eMetadataServer serves doc as the metadata document and returns its URL.
func e2eMetadataServer(t testing.TB, doc map[string]any) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/.well-known/oauth-authorization-server"
}

// TestE2EExitCodes reaches the exit codes the tables above do not: 0 for
// the informational commands, and 1, an internal error: the output cannot
// be written (stdout is /dev/full). Codes 2 to 5 are in TestE2EBadInput,
// TestE2EWrongPIN and TestE2EServerFailures.
func TestE2EExitCodes(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	srv := fx.emulator(t)

	for _, args := range [][]string{{"--version"}, {"--help"}, {"token", "--help"}, {"completion", "bash"}, {"completion", "zsh"}, {"completion", "fish"}} {
		res := runCLI(t, nil, args...)
		if res.code != 0 || res.stdout == "" {
			t.Errorf("want exit 0 and output:\n%s", res)
		}
	}

	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer full.Close()
	res := runCLIWith(t, cliOpts{env: fx.env(t, fx.card), stdout: full}, e2eTokenArgs(srv)...)
	if res.code != exitInternal || !strings.Contains(res.stderr, "no space left on device") {
		t.Errorf("token with stdout on /dev/full: want exit 1 and the write error:\n%s", res)
	}
	res = runCLIWith(t, cliOpts{env: fx.env(t, fx.card), stdout: full}, "jwk", "--token-label", "e2e-card")
	if res.code != exitInternal {
		t.Errorf("jwk with stdout on /dev/full: want exit 1:\n%s", res)
	}
}

// TestE2ELogging checks that debug logs, text and JSON, hold neither the
// PIN nor a grant or token (runCLI checks both on every run) and go to
// stderr only.
func TestE2ELogging(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	srv := fx.emulator(t)
	pid := e2ePID(t)
	for _, format := range []string{"text", "json"} {
		res := runCLI(t, fx.env(t, fx.card, "MP_HSM_LOG_FORMAT="+format), append([]string{"--log-level", "debug"}, e2eTokenArgs(srv, "--pid", pid)...)...)
		if res.code != 0 || res.stderr == "" {
			t.Fatalf("--log-level debug --log-format %s: want success and logs:\n%s", format, res)
		}
		e2eAccessToken(t, srv, res.stdout)
		if strings.Contains(res.stderr, pid) {
			t.Errorf("the pid appears in clear in the logs:\n%s", res.stderr)
		}
		if format == "json" {
			for _, l := range strings.Split(strings.TrimSpace(res.stderr), "\n") {
				if !json.Valid([]byte(l)) {
					t.Errorf("--log-format json: line %q is not JSON", l)
				}
			}
		}
	}
}

// TestE2EEmulateCommand runs `mp-hsm emulate` as a process, as make demo
// does, gets a token from it, and stops it with SIGTERM.
func TestE2EEmulateCommand(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	root := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(root, fx.ca.RootPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	em := startEmulate(t, binary(t), []string{"MP_HSM_EMULATE_ORG_NUMBER=" + softhsm.DefaultOrgNumber, "MP_HSM_EMULATE_FAIL_NEXT=1"},
		"--root", root, "--client-id", e2eClient, "--scope", e2eScopeRead)
	wk, cmd, p, stderr := em.wellKnown, em.proc.Cmd, em.proc, em.stderr

	// The first request meets the injected 503; the retry gets a token.
	res := runCLI(t, fx.env(t, fx.card), "token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead, "--well-known", wk)
	e2eWantOK(t, res)
	if strings.Count(res.stdout, ".") != 2 {
		t.Errorf("not a JWT: %q", res.stdout)
	}
	res = runCLI(t, fx.env(t, fx.card), "token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeWrite, "--well-known", wk)
	e2eWantFail(t, res, exitRefused, "MP-200")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Err(); err != nil {
		t.Errorf("emulate after SIGTERM: %v, want exit 0\nstderr: %s", err, stderr.String())
	}
	if e2eJWTRE.MatchString(stderr.String()) {
		t.Errorf("emulate logged a JWT:\n%s", stderr.String())
	}
}

// BenchmarkTokenCommand measures whole `mp-hsm token` processes against the
// emulator: process start, module load, login, key search, signature, the
// HTTP exchange and exit. It reports the peak resident set size of the
// process (the largest of all runs) as maxrss-KiB.
func BenchmarkTokenCommand(b *testing.B) {
	fx := e2e(b)
	cfg := fx.emulatorConfig(b)
	cfg.Logf = func(string, ...any) {}
	srv := emulator.NewTest(b, cfg)
	env, args := fx.env(b, fx.card), e2eTokenArgs(srv)
	binary(b)
	var maxRSS int64
	for b.Loop() {
		res := runCLI(b, env, args...)
		if res.code != 0 {
			b.Fatalf("%s", res)
		}
		maxRSS = max(maxRSS, res.maxRSSKiB)
	}
	b.ReportMetric(float64(maxRSS), "maxrss-KiB")
}

// emulateProc is `mp-hsm emulate` run by a test: its metadata URL, the
// self-service API's base (when it serves one), the process and its stderr.
type emulateProc struct {
	wellKnown, adminAPI string
	proc                *testexec.Proc
	stderr              *testexec.Buffer
}

// startEmulate runs bin's `emulate` with args in env (as testexec.Env
// gives it) and waits for the metadata URL it prints first; the test fails
// if none comes within 20 seconds. The process is stopped when the test
// ends.
func startEmulate(t *testing.T, bin string, env []string, args ...string) *emulateProc {
	t.Helper()
	cmd := testexec.Command(t, 2*time.Minute, bin, append([]string{"emulate"}, args...)...)
	cmd.Env = testexec.Env(t.TempDir(), env...)
	return startEmulateCmd(t, cmd)
}

// startEmulateCmd starts cmd, an `mp-hsm emulate`, and reads the lines it
// prints first: the metadata URL and, with --admin-client-id in its
// arguments, the self-service API's base.
func startEmulateCmd(t *testing.T, cmd *testexec.Cmd) *emulateProc {
	t.Helper()
	e := &emulateProc{stderr: &testexec.Buffer{}}
	cmd.Stderr = e.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	e.proc = testexec.Start(t, cmd)
	n := 1
	if slices.Contains(cmd.Args, "--admin-client-id") {
		n = 2
	}
	lines := make(chan []string, 1)
	go func() {
		r := bufio.NewReader(out)
		var got []string
		for range n {
			l, err := r.ReadString('\n')
			if err != nil {
				break
			}
			got = append(got, strings.TrimSpace(l))
		}
		lines <- got
	}()
	var got []string
	select {
	case got = <-lines:
	case <-time.After(20 * time.Second):
		t.Fatalf("emulate printed no metadata URL; stderr: %s", e.stderr)
	}
	if len(got) != n {
		t.Fatalf("emulate printed %q, want %d lines; stderr: %s", got, n, e.stderr)
	}
	e.wellKnown = got[0]
	if !strings.HasPrefix(e.wellKnown, "http://127.0.0.1:") || !strings.HasSuffix(e.wellKnown, "/.well-known/oauth-authorization-server") {
		t.Fatalf("emulate printed %q, want its metadata URL", e.wellKnown)
	}
	if n == 2 {
		e.adminAPI = got[1]
		if want := strings.TrimSuffix(e.wellKnown, ".well-known/oauth-authorization-server") + "api/v1/"; e.adminAPI != want {
			t.Fatalf("emulate printed %q as its second line, want the self-service API %q", e.adminAPI, want)
		}
	}
	return e
}
