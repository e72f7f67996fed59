//go:build cgo

package crypto11interop

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// The environment of a child: which scenario it runs and where the token
// is. The PIN goes through the environment, never argv.
const (
	envScenario     = "MPHSM_C11_SCENARIO"
	envModule       = "MPHSM_C11_MODULE"
	envToken        = "MPHSM_C11_TOKEN"
	envPIN          = "MPHSM_C11_PIN"
	envKey          = "MPHSM_C11_KEY"
	envIntermediate = "MPHSM_C11_INTERMEDIATE"
	envIssuer       = "MPHSM_C11_ISSUER"
	envTokenURL     = "MPHSM_C11_TOKEN_URL"
	envClient       = "MPHSM_C11_CLIENT"
)

// scenarios are what a child can run, by name. Each writes its transcript
// with c.step and returns an error only when it cannot go on.
var scenarios = map[string]func(c *child) error{}

func TestMain(m *testing.M) {
	if name := os.Getenv(envScenario); name != "" {
		os.Exit(runChild(name))
	}
	os.Exit(softhsm.Main(m))
}

// runChild runs one scenario in this (child) process and returns its exit
// code: 0 when the scenario ran to its end, whatever its steps answered.
func runChild(name string) int {
	run, ok := scenarios[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "no scenario %q\n", name)
		return 2
	}
	if err := run(&child{}); err != nil {
		fmt.Fprintf(os.Stderr, "scenario %s stopped: %v\n", name, err)
		return 1
	}
	return 0
}

// child is a running scenario.
type child struct{}

// env returns the environment variable key, which the parent must set.
func (c *child) env(key string) string {
	v := os.Getenv(key)
	if v == "" {
		fmt.Fprintf(os.Stderr, "%s is not set\n", key)
		os.Exit(2)
	}
	return v
}

// step writes one transcript line, "name: outcome", and the whole error on
// stderr; it returns err.
func (c *child) step(name string, err error) error {
	fmt.Printf("%s: %s\n", name, outcome(err))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	}
	return err
}

// outcome names what err is, stably enough to compare: "ok", the
// tokenerr sentinel and PKCS#11 return value of an error from package hsm,
// the return value alone of a crypto11 error, or the grant sentinel and
// OAuth error code of a refused grant.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	var parts []string
	for _, k := range []struct {
		err  error
		name string
	}{
		{tokenerr.ErrClosed, "ErrClosed"}, {tokenerr.ErrModule, "ErrModule"},
		{tokenerr.ErrNotLoggedIn, "ErrNotLoggedIn"}, {tokenerr.ErrSessionClosed, "ErrSessionClosed"},
		{grant.ErrRefused, "ErrRefused"}, {grant.ErrInvalidConfig, "ErrInvalidConfig"},
	} {
		if errors.Is(err, k.err) {
			parts = append(parts, k.name)
		}
	}
	var rv pkcs11.Error
	if errors.As(err, &rv) {
		// "pkcs11: 0x191: CKR_CRYPTOKI_ALREADY_INITIALIZED"
		s := rv.Error()
		parts = append(parts, s[strings.LastIndex(s, " ")+1:])
	}
	var te *grant.TokenError
	if errors.As(err, &te) {
		parts = append(parts, te.Code)
	}
	if len(parts) == 0 {
		return "error"
	}
	return strings.Join(parts, " ")
}

// signAndVerify signs a digest of msg with s (PKCS #1 v1.5, SHA-256) and
// verifies the signature with s's RSA public key.
func signAndVerify(s crypto.Signer, msg string) error {
	digest := sha256.Sum256([]byte(msg))
	sig, err := s.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		return err
	}
	pub, ok := s.Public().(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("want an RSA key, got %T", s.Public())
	}
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
}

// runScenario runs scenario name in a child process with the environment
// kv (KEY=value) besides SOFTHSM2_CONF, and returns its transcript lines.
// A child that stopped early fails the test.
func runScenario(t *testing.T, name string, kv ...string) []string {
	t.Helper()
	conf := os.Getenv("SOFTHSM2_CONF") // set by package softhsm
	if conf == "" {
		t.Fatal("SOFTHSM2_CONF is not set: make a token with package softhsm first")
	}
	cmd := testexec.Command(t, time.Minute, os.Args[0])
	cmd.Env = testexec.Env(t.TempDir(), append([]string{envScenario + "=" + name, "SOFTHSM2_CONF=" + conf}, kv...)...)
	res := testexec.Run(t, cmd)
	if res.Code != 0 {
		t.Fatalf("scenario %s: %v", name, res)
	}
	if res.Stderr != "" {
		t.Logf("scenario %s, stderr:\n%s", name, res.Stderr)
	}
	return strings.Split(strings.TrimSuffix(res.Stdout, "\n"), "\n")
}

// checkTranscript compares the transcript with want, line by line.
func checkTranscript(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("transcript:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// fixture is the token every test here uses: an RSA key labelled
// "Authentication" with its leaf certificate and the intermediate, issued
// by ca. Its children run one at a time (see TestSharedModule).
var fixture struct {
	once sync.Once
	ca   *softhsm.CA
	tok  *softhsm.Token
}

// token makes the fixture on first use.
func token(t *testing.T) (*softhsm.CA, *softhsm.Token) {
	t.Helper()
	fixture.once.Do(func() {
		ca, err := softhsm.NewCA(softhsm.EnvTest)
		if err != nil {
			t.Fatal(err)
		}
		fixture.tok, _ = softhsm.NewWithKey(t, ca, softhsm.KeyOptions{ID: []byte{1}, Label: "Authentication"}, softhsm.LeafOptions{})
		fixture.ca = ca
	})
	if fixture.tok == nil {
		t.Fatal("the token could not be made (see the first test that tried)")
	}
	return fixture.ca, fixture.tok
}
