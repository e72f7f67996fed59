//go:build cgo

package conformance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/backends"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// The keys every backend's token gets.
var (
	// rsaID is an RSA 2048 key with an authentication certificate and
	// the issuing CA beside it: the default key, as on an enterprise card.
	rsaID    = []byte{0x01}
	rsaLabel = "Authentication"
	// aaID has CKA_ALWAYS_AUTHENTICATE: P-256 where the token makes EC
	// keys (cheaper on a TPM), else RSA 2048.
	aaID    = []byte{0x02}
	aaLabel = "Always-Authenticate"
	// ecID is a P-256 key, where the token makes EC keys.
	ecID    = []byte{0x03}
	ecLabel = "EC"
)

// The Maskinporten client of the mp-hsm runs.
const (
	confClient = "conformance-client"
	confScope  = "conformance:read"
)

// fixture is one backend with its token provisioned and, after the login
// feature, open and logged in.
type fixture struct {
	r  *backends.Running
	ca *softhsm.CA

	rsaPub  *rsa.PublicKey
	rsaCert *x509.Certificate
	aaPub   crypto.PublicKey
	ecPub   *ecdsa.PublicKey // nil when the token makes no EC keys
	ecNote  string           // why ecPub is nil

	emu *emulator.Server

	mod  *hsm.Module
	slot hsm.Slot
	tok  *hsm.Token // nil until the login feature logged in

}

// provisionMu: one backend's start step (which writes its keys and
// certificates) holds it for writing, every other step and feature of any
// backend for reading. tpm2-pkcs11 keeps its objects in an SQLite store
// that every process and module loading it with the suite's environment
// opens (p11-kit's proxy too, in this process and in the mp-hsm runs on the
// p11-kit backend): a key written while another reads failed now and then
// with "Failed to add public object to db" (CKR_GENERAL_ERROR).
var provisionMu sync.RWMutex

// check is one feature's outcome as a test finds it.
type check struct {
	t            *testing.T
	notSupported string   // set by unsupported
	notes        []string // set by note
	failures     []string // set by fail
}

// note adds to what the feature's result says.
func (c *check) note(format string, args ...any) {
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
}

// fail fails the feature and the test.
func (c *check) fail(format string, args ...any) {
	c.t.Helper()
	msg := fmt.Sprintf(format, args...)
	c.failures = append(c.failures, msg)
	c.t.Error(msg)
}

// fatal fails the feature and ends its test.
func (c *check) fatal(format string, args ...any) {
	c.t.Helper()
	c.fail(format, args...)
	c.t.FailNow()
}

// unsupported ends the feature as not supported by the token, saying why.
func (c *check) unsupported(why string) {
	c.notSupported = why
	c.t.Log(Unsupported + ": " + why)
	c.t.SkipNow()
}

// record writes the result of feature on r.
func record(t *testing.T, r *backends.Running, name, version string, res Result) {
	t.Helper()
	res.Backend, res.Version = name, version
	if r != nil {
		res.Backend, res.Version = r.Name, r.Version
	}
	if err := suite.rec.Record(res); err != nil {
		t.Error(err)
	}
}

// feature runs f as the subtest name and records its outcome. A feature
// that go test's -run leaves out is neither run nor recorded.
func (fx *fixture) feature(t *testing.T, name string, f func(c *check)) {
	t.Helper()
	fx.featureLocked(t, name, f, provisionMu.RLock, provisionMu.RUnlock)
}

// faultFeature is feature for a fault that other backends can see: a card
// pulled or pcscd restarted (p11-kit's proxy loads OpenSC, which sees the
// suite's card) or the network HSM's server killed. It holds provisionMu
// for writing, so that no other backend's step runs meanwhile and meets
// the fault (C_GetSlotInfo through the proxy: CKR_GENERAL_ERROR).
func (fx *fixture) faultFeature(t *testing.T, name string, f func(c *check)) {
	t.Helper()
	fx.featureLocked(t, name, f, provisionMu.Lock, provisionMu.Unlock)
}

func (fx *fixture) featureLocked(t *testing.T, name string, f func(c *check), lock, unlock func()) {
	t.Helper()
	c := &check{}
	lock()
	t.Run(name, func(t *testing.T) {
		c.t = t
		f(c)
	})
	unlock()
	if c.t != nil {
		fx.record(t, name, c)
	}
}

// step runs f, a feature the features after it need, in t itself: -run
// cannot leave it out, and a failure ends t (the backend's tree). It
// reports whether f passed.
func (fx *fixture) step(t *testing.T, name string, f func(c *check)) bool {
	t.Helper()
	c := &check{t: t}
	defer fx.record(t, name, c) // also when f ends t with FailNow
	f(c)
	return len(c.failures) == 0
}

// record writes c's outcome of feature name on fx's backend.
func (fx *fixture) record(t *testing.T, name string, c *check) {
	res := Result{Feature: name, Result: OK, Note: strings.Join(c.notes, "; ")}
	if name == "start" {
		res.Notes = fx.r.Notes
	}
	switch {
	case len(c.failures) > 0:
		res.Result, res.Note = Failed, strings.Join(append(c.failures, c.notes...), "; ")
	case c.notSupported != "":
		res.Result, res.Note = Unsupported, c.notSupported
	case c.t.Failed() && c.t != t:
		res.Result, res.Note = Failed, strings.Join(append([]string{"the test failed (see its log)"}, c.notes...), "; ")
	}
	record(t, fx.r, "", "", res)
}

// TestConformance runs every feature on every backend: one subtest tree
// per backend, the backends in parallel, the features of one backend in
// order (a token has one PKCS#11 login state per process).
func TestConformance(t *testing.T) {
	ca := suite.ca
	emu := emulator.NewTest(t, emulator.Config{
		Roots:   []*x509.Certificate{ca.Root},
		Clients: []emulator.Client{{ID: confClient, OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{confScope}}},
		Logf:    func(string, ...any) {},
	})
	for _, s := range starters {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			if err := suite.startErr[s.name]; err != nil {
				record(t, nil, s.name, "", Result{Feature: "start", Result: Failed, Note: err.Error()})
				if ci() {
					t.Fatalf("backend %s did not start: %v", s.name, err)
				}
				t.Skipf("backend %s did not start (with CI=true this fails): %v", s.name, err)
			}
			fx := &fixture{r: suite.running[s.name], ca: ca, emu: emu}
			fx.run(t)
		})
	}
}

// run provisions fx's token and tests every feature on it. The card
// comes provisioned and has features of its own (runCard).
func (fx *fixture) run(t *testing.T) {
	if fx.r.Card != nil {
		fx.runCard(t)
		return
	}
	started := func() bool {
		provisionMu.Lock()
		defer provisionMu.Unlock() // also when the step ends t with FailNow
		return fx.step(t, "start", fx.provision)
	}()
	if !started {
		return
	}
	fx.feature(t, "key-protection", fx.keyProtection)
	loggedIn := func() bool {
		provisionMu.RLock()
		defer provisionMu.RUnlock()
		return fx.step(t, "login", fx.login)
	}()
	if !loggedIn {
		return
	}
	fx.feature(t, "list", fx.list)
	fx.feature(t, "select-slot", fx.selectSlot)
	fx.feature(t, "select-label", fx.selectLabel)
	fx.feature(t, "select-serial", fx.selectSerial)
	fx.feature(t, "select-id", fx.selectID)
	fx.feature(t, "select-uri", fx.selectURI)
	for _, alg := range []string{"RS256", "RS384", "RS512", "PS256", "ES256"} {
		fx.feature(t, alg, func(c *check) { fx.signAlg(c, alg) })
	}
	fx.feature(t, "always-authenticate", fx.alwaysAuthenticate)
	fx.feature(t, "chain", fx.chain)
	fx.feature(t, "concurrent-64", fx.concurrent)
	fx.feature(t, "after-failed-signature", fx.afterFailedSignature)
	// The features that run mp-hsm come last: the binary is built
	// meanwhile. The wrong PIN is the very last, so that the runs before
	// it show what a user sees after right PINs only; a wrong PIN in
	// another process leaves this one's login in place.
	fx.feature(t, "mp-hsm-token", fx.tokenRun)
	fx.feature(t, "mp-hsm-serve", fx.serveRun)
	if fx.r.Module == p11kitProxy() {
		fx.feature(t, "p11-kit-neighbours", fx.p11kitNeighbours)
	}
	fx.feature(t, "wrong-pin", fx.wrongPIN)
	fx.feature(t, "pin-flags", fx.pinFlags)
	if fx.r.RPC != nil {
		// Last: it breaks this process's connections to the server.
		fx.faultFeature(t, "hsm-faults", fx.rpcFaults)
	}
}

// provision generates the keys and writes the certificates, and opens
// the module with package hsm.
func (fx *fixture) provision(c *check) {
	r := fx.r
	c.note("module %s", r.Module)
	pub, err := r.GenerateKey(backends.KeySpec{Label: rsaLabel, ID: rsaID, Kind: "rsa2048"})
	if err != nil {
		c.fatal("%v", err)
	}
	fx.rsaPub = pub.(*rsa.PublicKey)
	if fx.rsaCert, err = fx.ca.IssueLeaf(fx.rsaPub, softhsm.LeafOptions{Usage: softhsm.Authentication}); err != nil {
		c.fatal("%v", err)
	}
	if err := r.PutCertificate(fx.rsaCert, rsaID, rsaLabel); err != nil {
		c.fatal("%v", err)
	}
	inter := fx.ca.Intermediate
	if err := r.PutCertificate(inter, inter.SubjectKeyId, inter.Subject.CommonName); err != nil {
		c.fatal("%v", err)
	}
	ecGen, err := r.HasMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN)
	if err != nil {
		c.fatal("%v", err)
	}
	aaKind := "rsa2048"
	if ecGen {
		pub, err := r.GenerateKey(backends.KeySpec{Label: ecLabel, ID: ecID, Kind: "ec-p256"})
		if err != nil {
			c.fatal("%v", err)
		}
		fx.ecPub = pub.(*ecdsa.PublicKey)
		aaKind = "ec-p256"
	} else {
		fx.ecNote = "C_GetMechanismList has no CKM_EC_KEY_PAIR_GEN"
	}
	if fx.aaPub, err = r.GenerateKey(backends.KeySpec{Label: aaLabel, ID: aaID, Kind: aaKind, AlwaysAuthenticate: true}); err != nil {
		c.fatal("%v", err)
	}
	if fx.mod, err = hsm.Open(r.Module); err != nil {
		c.fatal("hsm.Open(%s): %v", r.Module, err)
	}
	atEnd(fx.mod.Close)
}

// keyProtection reads back the protection attributes of the RSA key.
func (fx *fixture) keyProtection(c *check) {
	f, err := fx.r.PrivateKeyFlags(rsaID)
	if err != nil {
		c.fatal("%v", err)
	}
	c.note("CKA_SENSITIVE %v, CKA_EXTRACTABLE %v, CKA_ALWAYS_SENSITIVE %v, CKA_NEVER_EXTRACTABLE %v",
		f.Sensitive, f.Extractable, f.AlwaysSensitive, f.NeverExtractable)
	if !f.Sensitive || f.Extractable {
		c.fail("generated with CKA_SENSITIVE true and CKA_EXTRACTABLE false, the token reports sensitive %v, extractable %v", f.Sensitive, f.Extractable)
	}
}

// flagNote says which of the PIN-counter flags f has.
func flagNote(f hsm.TokenFlags) string {
	var seen []string
	for _, x := range []struct {
		on   bool
		name string
	}{{f.PINCountLow(), "count-low"}, {f.PINFinalTry(), "final-try"}, {f.PINLocked(), "locked"}} {
		if x.on {
			seen = append(seen, x.name)
		}
	}
	if len(seen) == 0 {
		return "reports none of count-low, final-try, locked"
	}
	return "reports " + strings.Join(seen, ", ")
}

// pinFlags reads the token's flags after the wrong PIN of wrongPIN.
func (fx *fixture) pinFlags(c *check) {
	slot, err := fx.mod.FindSlot(hsm.TokenSelector{Serial: fx.r.Serial, Label: fx.r.Label})
	if err != nil {
		c.fatal("%v", err)
	}
	f := slot.Token.Flags
	c.note("after one wrong PIN the token %s (flags: %s)", flagNote(f), f)
	if f.PINLocked() {
		c.fail("one wrong PIN locked the token")
	}
}

// login logs in with the right PIN and keeps the token open for the
// features after it.
func (fx *fixture) login(c *check) {
	slot, err := fx.mod.FindSlot(hsm.TokenSelector{Serial: fx.r.Serial, Label: fx.r.Label})
	if err != nil {
		c.fatal("%v", err)
	}
	fx.slot = slot
	tok, err := fx.mod.OpenSlot(slot, hsm.TokenOptions{})
	if err != nil {
		c.fatal("%v", err)
	}
	atEnd(tok.Close)
	if err := tok.Login(hsm.StaticPIN([]byte(fx.r.PIN)), hsm.LoginOptions{}); err != nil {
		c.fatal("login with the right PIN: %v", err)
	}
	if !tok.LoggedIn() {
		c.fatal("Login returned no error but the token is not logged in")
	}
	info, err := tok.Info()
	if err != nil {
		c.fatal("%v", err)
	}
	c.note("after the right PIN the token %s", flagNote(info.Flags))
	fx.tok = tok
}

// list finds the token among the module's slots, and the keys and
// certificates on it.
func (fx *fixture) list(c *check) {
	slots, err := fx.mod.Slots()
	if err != nil {
		c.fatal("%v", err)
	}
	found := false
	for _, s := range slots {
		if s.Token != nil && s.Token.Serial == fx.r.Serial && s.Token.Label == fx.r.Label {
			found = true
			c.note("the token in slot %d; the module lists %s", s.ID, plural(len(slots), "slot"))
		}
	}
	if !found {
		c.fail("the module lists no token %q serial %q: %v", fx.r.Label, fx.r.Serial, slots)
	}
	keys, err := fx.tok.Keys()
	if err != nil {
		c.fatal("%v", err)
	}
	want := map[string]bool{"01": false, "02": false}
	if fx.ecPub != nil {
		want["03"] = false
	}
	for _, k := range keys {
		if _, ok := want[k.IDHex()]; ok {
			want[k.IDHex()] = true
		}
	}
	for id, seen := range want {
		if !seen {
			c.fail("key %s not listed: %v", id, keys)
		}
	}
	certs, err := fx.tok.Certificates()
	if err != nil {
		c.fatal("%v", err)
	}
	var leaf, inter bool
	for _, ct := range certs {
		leaf = leaf || ct.Cert.Equal(fx.rsaCert)
		inter = inter || ct.Cert.Equal(fx.ca.Intermediate)
	}
	if !leaf || !inter {
		c.fail("certificates listed: %d, leaf among them %v, issuing CA %v", len(certs), leaf, inter)
	}
}

// plural is "1 slot" or "n slots".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
