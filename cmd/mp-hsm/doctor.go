package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/inspect"
	"github.com/mp-hsm/mp-hsm/signer"
)

func doctorCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "doctor",
		Usage:     "check the whole setup and say what is wrong and how to fix it",
		UsageText: "mp-hsm doctor --slot 0 [--env test|prod | --well-known URL] [--client-id ID --scope SCOPE]",
		Description: "Checks, in order, printing one line per check (ok, warn, fail or skip, the check's name, and\n" +
			"for warn and fail a hint): the PKCS#11 module loads (module); the token is present (token);\n" +
			"its PIN flags (pin: a low count warns; final try or locked fails, and no login is tried);\n" +
			"the login (login: only with MP_HSM_PIN or --pin-file, or on a terminal); the key is found\n" +
			"(key) and signs a random digest that its public key verifies (signature); the certificate\n" +
			"belongs to the key (certificate), is valid now and for 60 more days (validity), is for\n" +
			"authentication (key-usage), comes from a Buypass or Commfides CA (issuer) and holds an\n" +
			"organisation number (org-number); the environment fits the certificate (environment); the\n" +
			"metadata can be fetched (metadata); the local clock is within 2 s (warn) or 5 s (fail) of\n" +
			"the server's Date header (clock); and, only with --client-id and --scope, a real token\n" +
			"request (token-request). The token itself is never shown; nor are the PIN or the grant.\n\n" +
			"--output json prints an array of {check, status, message, hint}.\n\n" +
			"Exit status: 0 when no check failed (warnings allowed); otherwise that of the first failed\n" +
			"check: 2 bad flags or input; 3 module, token, PIN, key or certificate (environment mismatch\n" +
			"included); 4 Maskinporten would refuse the grant: refused token request, or clock skew;\n" +
			"5 metadata or token endpoint unreachable or failing.",
		Flags: concat(keyFlags(), mpFlags(), requestFlags(), []cli.Flag{
			&cli.StringFlag{Category: catOut, Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "`FORMAT`: text or json", EnvVars: []string{"MP_HSM_OUTPUT"}},
		}),
		Action: func(c *cli.Context) error { return e.doctor(c) },
	}
}

// Check results.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "fail"
	checkSkip = "skip"
)

// doctorCheck is the result of one check; its JSON form is part of the
// CLI's contract.
type doctorCheck struct {
	Check   string `json:"check"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Hint    string `json:"hint"`
	code    int    // the exit code of a failed check
}

// Thresholds of the doctor's checks.
const (
	doctorExpiryWarn = 60 * 24 * time.Hour
	doctorSkewWarn   = 2 * time.Second
	doctorSkewFail   = 5 * time.Second
)

// doctorRun holds what the checks found so far; each check uses what the
// earlier ones left and skips when it is missing.
type doctorRun struct {
	e      *env
	c      *cli.Context
	now    func() time.Time
	json   bool
	colour bool
	checks []doctorCheck

	ks       *keySetup
	mod      *hsm.Module
	slot     hsm.Slot
	tok      *hsm.Token
	pinBlock bool // the PIN flags forbid a login
	loggedIn bool
	key      *hsm.Key
	signer   *signer.TokenSigner
	certErr  error             // the token's certificate for the key's CKA_ID holds another key
	cert     *x509.Certificate // the leaf certificate the checks judge
	chain    []*x509.Certificate
	envr     *grant.Environment
	envFail  bool
	meta     *doctorMeta // the fetched metadata, once fetched
}

// doctorMeta is a metadata fetch: the environment it describes and the
// server's Date header.
type doctorMeta struct {
	url        string
	env        grant.Environment
	err        error
	date       time.Time // zero without a Date header
	start, end time.Time // local clock around the request
}

func (e *env) doctor(c *cli.Context) error {
	out := c.String("output")
	if out == "token" { // the shared MP_HSM_OUTPUT default of 'token' means text here
		out = "text"
	}
	if out != "text" && out != "json" {
		return usagef("--output %q: use text or json", out)
	}
	d := &doctorRun{e: e, c: c, now: time.Now, json: out == "json",
		colour: out == "text" && doctorColour(e)}
	defer d.close()
	d.run()
	var first *doctorCheck
	counts := map[string]int{}
	for i := range d.checks {
		ch := &d.checks[i]
		counts[ch.Status]++
		if ch.Status == checkFail && first == nil {
			first = ch
		}
	}
	if d.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(d.checks); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "%d ok, %d warning(s), %d failed, %d skipped\n",
			counts[checkOK], counts[checkWarn], counts[checkFail], counts[checkSkip])
	}
	if first != nil {
		return withCode(first.code, fmt.Errorf("doctor: %d check(s) failed, first %s: %s", counts[checkFail], first.Check, first.Message))
	}
	return nil
}

// doctorColour reports whether the doctor's text may be coloured: only on
// a terminal, never with NO_COLOR set or TERM=dumb.
func doctorColour(e *env) bool {
	f, ok := e.stdout.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && e.getenv("NO_COLOR") == "" && e.getenv("TERM") != "dumb"
}

func (d *doctorRun) close() {
	if d.tok != nil {
		d.tok.Close()
	}
	if d.mod != nil {
		d.mod.Close()
	}
}

// add records a check and, for text output, prints its line at once, so
// that slow checks show progress.
func (d *doctorRun) add(ch doctorCheck) {
	ch.Message = doctorOneLine(ch.Message)
	ch.Hint = doctorOneLine(ch.Hint)
	d.checks = append(d.checks, ch)
	if d.json {
		return
	}
	status := fmt.Sprintf("%-4s", ch.Status)
	if d.colour {
		colour := map[string]string{checkOK: "32", checkWarn: "33", checkFail: "31", checkSkip: "2"}[ch.Status]
		status = "\x1b[" + colour + "m" + status + "\x1b[0m"
	}
	line := fmt.Sprintf("%s  %-13s  %s", status, ch.Check, ch.Message)
	if ch.Hint != "" && (ch.Status == checkWarn || ch.Status == checkFail) {
		line += "  hint: " + ch.Hint
	}
	fmt.Fprintln(d.e.stdout, line)
}

func (d *doctorRun) ok(check, msg string, args ...any) {
	d.add(doctorCheck{Check: check, Status: checkOK, Message: fmt.Sprintf(msg, args...)})
}

func (d *doctorRun) warn(check, msg, hint string) {
	d.add(doctorCheck{Check: check, Status: checkWarn, Message: msg, Hint: hint})
}

func (d *doctorRun) fail(check string, code int, msg, hint string) {
	if code == exitOK {
		code = exitInternal // a failed check never exits 0
	}
	d.add(doctorCheck{Check: check, Status: checkFail, Message: msg, Hint: hint, code: code})
}

func (d *doctorRun) skip(check, msg string, args ...any) {
	d.add(doctorCheck{Check: check, Status: checkSkip, Message: fmt.Sprintf(msg, args...)})
}

// failErr records a failed check for err, with the exit code err maps to,
// or code when err maps to none of the contract's codes.
func (d *doctorRun) failErr(check string, code int, err error, hint string) {
	d.fail(check, exitCodeOr(err, code), err.Error(), hint)
}

// exitCodeOr returns err's exit code, or def when it maps to none.
func exitCodeOr(err error, def int) int {
	if c := exitCode(err); c != exitInternal {
		return c
	}
	return def
}

// doctorOneLine keeps a message on one line.
func doctorOneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", "; ")
}

func (d *doctorRun) run() {
	d.checkModule()
	d.checkToken()
	d.checkPIN()
	d.checkLogin()
	d.checkKey()
	d.checkSignature()
	d.checkCertificate()
	d.checkValidity()
	d.checkKeyUsage()
	d.checkIssuer()
	d.checkOrgNumber()
	d.checkEnvironment()
	d.checkMetadata()
	d.checkClock()
	d.checkTokenRequest()
}

func (d *doctorRun) checkModule() {
	ks, err := d.e.resolveKey(d.c)
	if err != nil {
		hint := "fix the flag named; see mp-hsm --help"
		if exitCode(err) != exitUsage {
			hint = "install the card's PKCS#11 module (apt install opensc for Buypass and Commfides cards) or give --module PATH"
		}
		d.failErr("module", exitUsage, err, hint)
		return
	}
	d.ks = ks
	m, err := hsm.Open(ks.cfg.Module)
	if err != nil {
		d.failErr("module", exitToken, err, "install the card's PKCS#11 module (apt install opensc for Buypass and Commfides cards) or give --module PATH")
		return
	}
	d.mod = m
	msg := m.Path()
	if info, err := m.Info(); err == nil {
		msg += fmt.Sprintf(" (%s %s, library %s, PKCS#11 %s)", info.Manufacturer, info.Description, info.Version, info.Cryptoki)
	}
	if ks.moduleSource == "default" {
		msg += "; found in the default places"
	}
	d.ok("module", "%s", msg)
}

func (d *doctorRun) checkToken() {
	if d.mod == nil {
		d.skip("token", "needs the module")
		return
	}
	slot, err := d.mod.FindSlot(d.ks.cfg.Token)
	if err != nil {
		d.failErr("token", exitToken, d.e.explainKeyError(err), "insert the card (is pcscd running?), or choose the token with --slot, --token-label or --token-serial (see mp-hsm list)")
		return
	}
	tok, err := d.mod.OpenToken(slot.ID, hsm.TokenOptions{Logger: d.e.log})
	if err != nil {
		d.failErr("token", exitToken, err, "the token is present but cannot be opened: reinsert the card and try again")
		return
	}
	d.slot, d.tok = slot, tok
	t := slot.Token
	how := ""
	if !d.ks.tokenChosen {
		how = "; the only token present"
	}
	d.ok("token", "%q (serial %s, %s %s) in slot %d%s", t.Label, t.Serial, t.Manufacturer, t.Model, slot.ID, how)
}

func (d *doctorRun) checkPIN() {
	if d.tok == nil {
		d.skip("pin", "needs the token")
		return
	}
	info, err := d.tok.Info()
	if err != nil {
		d.failErr("pin", exitToken, err, "reinsert the card and try again")
		d.pinBlock = true
		return
	}
	f := info.Flags
	d.slot.Token.Flags = f
	switch {
	case !f.LoginRequired():
		d.ok("pin", "the token needs no login")
	case f.PINLocked():
		d.pinBlock = true
		d.fail("pin", exitToken, "the PIN is locked (CKF_USER_PIN_LOCKED); no login was tried",
			"unblock the PIN with the PUK (or SO PIN) using the card issuer's tools, then run doctor again")
	case f.PINFinalTry():
		d.pinBlock = true
		d.fail("pin", exitToken, "one more wrong PIN locks the token (CKF_USER_PIN_FINAL_TRY); no login was tried",
			"doctor never spends the final try: when you are certain of the PIN, log in once with mp-hsm token --allow-final-pin-try")
	case f.PINCountLow():
		d.warn("pin", "a wrong PIN was entered since the last login (CKF_USER_PIN_COUNT_LOW)",
			"make sure the PIN is right before the next try: the card locks after a few wrong PINs")
	case f.PINToBeChanged():
		d.warn("pin", "the token wants its PIN changed (CKF_USER_PIN_TO_BE_CHANGED)",
			"change the PIN with the card issuer's tools before using the key")
	case f.ProtectedAuthPath():
		d.ok("pin", "no PIN problems reported; the reader has a PIN pad")
	default:
		d.ok("pin", "no PIN problems reported")
	}
}

// doctorTerminal reports whether r is a terminal a person can type on.
func doctorTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (d *doctorRun) checkLogin() {
	switch {
	case d.tok == nil:
		d.skip("login", "needs the token")
		return
	case d.pinBlock:
		d.skip("login", "not tried: see the PIN check")
		return
	case !d.slot.Token.Flags.LoginRequired():
		d.loggedIn = true
		d.skip("login", "the token needs no login")
		return
	}
	var pin hsm.PINSource
	opts := hsm.LoginOptions{} // never the final try, whatever the flags say
	interactive := doctorTerminal(d.e.stdin)
	switch {
	case d.ks.explicitPIN:
		pin = d.ks.cfg.PIN
	case d.slot.Token.Flags.ProtectedAuthPath() && interactive:
		fmt.Fprintln(d.e.stderr, "mp-hsm doctor: enter the PIN on the reader's PIN pad")
	case interactive:
		opts.Prompt = d.ks.cfg.Login.Prompt
	default:
		d.skip("login", "no PIN given (MP_HSM_PIN or --pin-file) and no terminal to ask on; the key checks need a login")
		return
	}
	if err := d.tok.Login(pin, opts); err != nil {
		hint := "check the PIN in MP_HSM_PIN or --pin-file before trying again: the card locks after a few wrong PINs"
		var pe *hsm.PINError
		if errors.As(err, &pe) && errors.Is(err, hsm.ErrPINLocked) {
			hint = "unblock the PIN with the PUK (or SO PIN) using the card issuer's tools"
		}
		d.failErr("login", exitToken, err, hint)
		return
	}
	d.loggedIn = true
	d.ok("login", "logged in")
}

func (d *doctorRun) checkKey() {
	switch {
	case d.tok == nil:
		d.skip("key", "needs the token")
		return
	case !d.loggedIn:
		d.skip("key", "needs a login")
		d.pickCertificate()
		return
	}
	key, err := d.tok.FindKey(d.ks.cfg.Key)
	if err != nil {
		d.failErr("key", exitToken, d.e.explainKeyError(err), "choose the key with --key-id or --key-label (see mp-hsm list)")
		return
	}
	d.key = key
	s, err := signer.New(key, signer.Options{ExtraChain: d.ks.cfg.ExtraChain})
	switch {
	case errors.Is(err, signer.ErrCertificateMismatch):
		d.certErr = err // the certificate check reports it
	case err != nil:
		d.failErr("key", exitToken, err, "Maskinporten needs an RSA key of at least 2048 bits: choose another key (see mp-hsm list)")
		return
	default:
		d.signer = s
		d.chain = s.Chain()
		if len(d.chain) > 0 {
			d.cert = d.chain[0]
		}
	}
	how := ""
	if !d.ks.keyChosen {
		how = "; chosen as the authentication key"
	}
	if key.AlwaysAuthenticate {
		d.warn("key", key.KeyInfo.String()+how,
			"the key wants the PIN before every signature (CKA_ALWAYS_AUTHENTICATE): it is likely the card's signing key; use the authentication key (see mp-hsm list)")
		return
	}
	d.ok("key", "%s%s", key.KeyInfo.String(), how)
}

// pickCertificate chooses, without a login, the certificate the key flags
// point at: by CKA_ID or label, else the one authentication certificate,
// else the only end-entity certificate.
func (d *doctorRun) pickCertificate() {
	if d.tok == nil {
		return
	}
	certs, err := d.tok.Certificates()
	if err != nil {
		return
	}
	sel := d.ks.cfg.Key
	var pool, byFlags, auth, leaves []*x509.Certificate
	for _, c := range certs {
		pool = append(pool, c.Cert)
		if c.Cert.IsCA {
			continue
		}
		leaves = append(leaves, c.Cert)
		if (len(sel.ID) > 0 || sel.Label != "") && (len(sel.ID) == 0 || string(sel.ID) == string(c.ID)) && (sel.Label == "" || sel.Label == c.Label) {
			byFlags = append(byFlags, c.Cert)
		}
		u := c.Cert.KeyUsage
		if u&x509.KeyUsageDigitalSignature != 0 && u&x509.KeyUsageContentCommitment == 0 {
			auth = append(auth, c.Cert)
		}
	}
	var cert *x509.Certificate
	switch {
	case len(sel.ID) > 0 || sel.Label != "":
		if len(byFlags) == 1 {
			cert = byFlags[0]
		}
	case len(auth) == 1:
		cert = auth[0]
	case len(leaves) == 1:
		cert = leaves[0]
	}
	if cert == nil {
		return
	}
	chain, err := signer.BuildChain(cert.PublicKey, pool, d.ks.cfg.ExtraChain)
	if err != nil || len(chain) == 0 {
		chain = []*x509.Certificate{cert}
	}
	d.cert, d.chain = cert, chain
}

func (d *doctorRun) checkSignature() {
	if d.key == nil {
		d.skip("signature", "needs the key")
		return
	}
	pub := d.key.Public()
	verifyWith := "the key's public half"
	if d.cert != nil {
		pub, verifyWith = d.cert.PublicKey, "the certificate's public key"
	}
	digest := make([]byte, 32)
	if _, err := rand.Read(digest); err != nil {
		d.fail("signature", exitInternal, "cannot make a random digest: "+err.Error(), "")
		return
	}
	ctx, cancel := context.WithTimeout(d.c.Context, 2*time.Minute)
	defer cancel()
	sig, err := d.key.SignContext(ctx, digest, crypto.SHA256)
	if err != nil {
		d.failErr("signature", exitToken, err, "the token refused to sign with the key: check that it is a signing key (CKA_SIGN) and the card is still inserted")
		return
	}
	var verr error
	switch k := pub.(type) {
	case *rsa.PublicKey:
		verr = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig)
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			verr = errors.New("ECDSA verification failed")
		}
	default:
		verr = fmt.Errorf("cannot verify with a %T", pub)
	}
	if verr != nil {
		d.fail("signature", exitToken, "a test signature made on the token does not verify with "+verifyWith+": "+verr.Error(),
			"the certificate does not belong to this key, or the token signs wrongly: choose the key that matches the certificate (see mp-hsm list)")
		return
	}
	d.ok("signature", "a test signature over a random SHA-256 digest verifies with %s", verifyWith)
}

func (d *doctorRun) checkCertificate() {
	kid := d.c.String("kid")
	switch {
	case d.key == nil && d.cert == nil && d.tok != nil && !d.loggedIn:
		d.skip("certificate", "cannot tell which certificate is the key's without a login: give --key-id or a PIN")
	case d.key == nil && d.cert == nil:
		d.skip("certificate", "needs the key")
	case d.key == nil:
		d.skip("certificate", "not compared with the key (no login); checking %q", d.cert.Subject.CommonName)
	case d.cert == nil:
		if d.certErr != nil {
			d.failErr("certificate", exitToken, d.certErr, "the certificate with the key's CKA_ID holds another public key: replace it with the key's certificate")
			return
		}
		if kid != "" {
			d.ok("certificate", "no certificate for the key on the token; grants carry kid %q", kid)
			return
		}
		d.fail("certificate", exitToken, "no certificate for the key on the token, so grants cannot carry x5c",
			"write the key's certificate to the token, or register the public key (mp-hsm jwk) on the client and give --kid")
	default:
		if err := signer.MatchCertificate(d.key.Public(), d.cert); err != nil {
			d.failErr("certificate", exitToken, err, "choose the key that matches the certificate (see mp-hsm list)")
			return
		}
		d.ok("certificate", "%q (serial %x) holds the key; x5c carries a chain of %d", d.cert.Subject.CommonName, d.cert.SerialNumber, len(d.chain))
	}
}

// certSkip reports, for a check of the certificate, why there is none.
func (d *doctorRun) certSkip(check string) bool {
	if d.cert != nil {
		return false
	}
	if d.key != nil && d.c.String("kid") != "" {
		d.skip(check, "no certificate: the key is identified by --kid")
	} else {
		d.skip(check, "needs the certificate")
	}
	return true
}

func (d *doctorRun) checkValidity() {
	if d.certSkip("validity") {
		return
	}
	now := d.now()
	c := d.cert
	day := func(t time.Time) string { return t.UTC().Format("2006-01-02") }
	switch {
	case now.After(c.NotAfter):
		d.fail("validity", exitToken, fmt.Sprintf("the certificate expired on %s (%s)", day(c.NotAfter), inspect.Relative("not_after", c.NotAfter, now)),
			"renew the enterprise certificate with Buypass or Commfides and put the new one on the token (and register it where a kid is used)")
	case now.Before(c.NotBefore):
		d.fail("validity", exitToken, fmt.Sprintf("the certificate is valid only from %s (%s)", day(c.NotBefore), inspect.Relative("not_before", c.NotBefore, now)),
			"wait until it is valid, or check the local clock")
	case c.NotAfter.Sub(now) < doctorExpiryWarn:
		d.warn("validity", fmt.Sprintf("the certificate expires on %s (in %s)", day(c.NotAfter), inspect.Duration(c.NotAfter.Sub(now))),
			"order a new certificate now: renewal takes days, and the key must be registered again where a kid is used")
	default:
		d.ok("validity", "valid until %s (in %s)", day(c.NotAfter), inspect.Duration(c.NotAfter.Sub(now)))
	}
}

func (d *doctorRun) checkKeyUsage() {
	if d.certSkip("key-usage") {
		return
	}
	u := d.cert.KeyUsage
	names := strings.Join(inspect.KeyUsageNames(u), ", ")
	switch {
	case u == 0:
		d.ok("key-usage", "no keyUsage extension: any use allowed")
	case u&x509.KeyUsageDigitalSignature != 0:
		d.ok("key-usage", "%s: fits authentication", names)
	case u&x509.KeyUsageContentCommitment != 0:
		d.warn("key-usage", "keyUsage "+names+" only: this is the card's signing key, not its authentication key",
			"choose the authentication key, whose certificate has keyUsage digitalSignature (see mp-hsm list, then --key-id)")
	default:
		d.fail("key-usage", exitToken, "keyUsage "+names+" does not allow signatures",
			"choose the authentication key, whose certificate has keyUsage digitalSignature (see mp-hsm list)")
	}
}

func (d *doctorRun) checkIssuer() {
	if d.certSkip("issuer") {
		return
	}
	ca := d.cert.Issuer.CommonName
	env, err := grant.EnvironmentForCertificate(d.cert)
	if err != nil {
		d.warn("issuer", fmt.Sprintf("%q is not a known Buypass or Commfides CA, so the environment cannot be told from it", ca),
			"Maskinporten accepts x5c only with Buypass or Commfides enterprise certificates; with another key register it (mp-hsm jwk) and give --kid, and give --env")
		return
	}
	d.ok("issuer", "%s: a %s certificate", ca, env)
}

func (d *doctorRun) checkOrgNumber() {
	if d.certSkip("org-number") {
		return
	}
	org, ok := grant.CertificateOrgNumber(d.cert)
	switch {
	case !ok && d.c.String("kid") != "":
		d.warn("org-number", "the certificate holds no organisation number", "with --kid the certificate is not sent, so this only matters for x5c grants")
	case !ok:
		d.fail("org-number", exitToken, "the certificate holds no organisation number (organizationIdentifier NTRNO-... or serialNumber)",
			"Maskinporten needs an enterprise certificate (virksomhetssertifikat) whose organisation owns the client")
	case !grant.ValidOrgNumber(org):
		d.warn("org-number", org+" has a wrong check digit", "this certificate is unlikely to be a real enterprise certificate")
	default:
		d.ok("org-number", "%s", org)
	}
}

func (d *doctorRun) checkEnvironment() {
	wk := d.c.String("well-known")
	others := d.c.String("env") != "" || d.c.String("issuer") != "" || d.c.String("token-endpoint") != ""
	if wk != "" && !others {
		m := d.fetchMetadata(wk)
		if m.err != nil {
			d.skip("environment", "the metadata at %s could not be read (see the metadata check)", wk)
			d.envFail = true
			return
		}
		envr := m.env
		if err := grant.CheckEnvironment(envr, d.chain); err != nil {
			d.envFail = true
			d.failErr("environment", exitToken, err, "use the certificate for that environment, or the other environment's metadata")
			return
		}
		d.envr = &envr
		d.ok("environment", "issuer %s from the metadata at %s%s", envr.Issuer, wk, d.fitsCert(envr))
		return
	}
	ctx, cancel := context.WithTimeout(d.c.Context, d.c.Duration("timeout"))
	defer cancel()
	envr, how, err := d.e.resolveEnvironment(ctx, d.c, d.chain)
	if err != nil {
		d.envFail = true
		hint := "give --env test or --env prod, or --well-known URL"
		var me *grant.EnvironmentMismatchError
		if errors.As(err, &me) {
			hint = fmt.Sprintf("a %s certificate works only in %s: give --env %s, or use a %s certificate", me.CertificateEnvironment, me.CertificateEnvironment, me.CertificateEnvironment, me.Environment)
		}
		d.failErr("environment", exitUsage, err, hint)
		return
	}
	d.envr = &envr
	name := envr.Name
	if name == "" {
		name = "custom"
	}
	d.ok("environment", "%s (issuer %s), from %s%s", name, envr.Issuer, how, d.fitsCert(envr))
}

// fitsCert says whether the certificate's CA tells the same environment.
func (d *doctorRun) fitsCert(envr grant.Environment) string {
	if d.cert == nil {
		return ""
	}
	if ce, err := grant.EnvironmentForCertificate(d.cert); err == nil && (envr.Name == "test" || envr.Name == "prod") && ce == envr.Name {
		return "; the certificate fits"
	}
	return ""
}

// doctorDates records the Date header and timing of the last answer.
type doctorDates struct {
	base http.RoundTripper
	mu   sync.Mutex
	m    *doctorMeta
	now  func() time.Time
}

func (t *doctorDates) RoundTrip(r *http.Request) (*http.Response, error) {
	start := t.now()
	resp, err := t.base.RoundTrip(r)
	end := t.now()
	if err == nil {
		t.mu.Lock()
		t.m.start, t.m.end = start, end
		t.m.date = time.Time{}
		if v := resp.Header.Get("Date"); v != "" {
			if dt, perr := http.ParseTime(v); perr == nil {
				t.m.date = dt
			}
		}
		t.mu.Unlock()
	}
	return resp, err
}

// fetchMetadata fetches the metadata at url once per run.
func (d *doctorRun) fetchMetadata(url string) *doctorMeta {
	if d.meta != nil && d.meta.url == url {
		return d.meta
	}
	m := &doctorMeta{url: url}
	rt := &doctorDates{base: http.DefaultTransport, m: m, now: d.now}
	ctx, cancel := context.WithTimeout(d.c.Context, d.c.Duration("timeout"))
	defer cancel()
	md := &grant.Metadata{URL: url, AllowInsecure: d.c.Bool("allow-insecure"),
		HTTPClient: &http.Client{Transport: rt, Timeout: d.c.Duration("timeout")}}
	m.env, m.err = md.Environment(ctx)
	d.meta = m
	return m
}

func (d *doctorRun) checkMetadata() {
	url := d.c.String("well-known")
	if url == "" {
		if d.envr == nil {
			d.skip("metadata", "needs the environment")
			return
		}
		iss := d.envr.Issuer
		if !strings.HasSuffix(iss, "/") {
			iss += "/"
		}
		url = iss + ".well-known/oauth-authorization-server"
	}
	m := d.fetchMetadata(url)
	if m.err != nil {
		code := exitUnavailable
		if errors.Is(m.err, grant.ErrInvalidConfig) {
			code = exitUsage
		}
		d.fail("metadata", code, m.err.Error(),
			"check the network, a proxy (HTTPS_PROXY, NO_PROXY) and firewalls, and that the URL is Maskinporten's (status.digdir.no)")
		return
	}
	if d.envr != nil && m.env.Issuer != d.envr.Issuer {
		d.fail("metadata", exitUsage, fmt.Sprintf("the metadata at %s names issuer %s, but grants would carry aud %s", url, m.env.Issuer, d.envr.Issuer),
			"give --well-known "+url+" so that the grant's aud is the server's issuer, or fix --issuer")
		return
	}
	if d.envr != nil && m.env.TokenEndpoint != d.envr.TokenEndpoint {
		d.warn("metadata", fmt.Sprintf("the metadata at %s names token endpoint %s, but grants would go to %s", url, m.env.TokenEndpoint, d.envr.TokenEndpoint),
			"give --well-known "+url+" to use the server's own token endpoint")
		return
	}
	d.ok("metadata", "%s answers: issuer %s, token endpoint %s", url, m.env.Issuer, m.env.TokenEndpoint)
}

func (d *doctorRun) checkClock() {
	m := d.meta
	switch {
	case m == nil || m.err != nil:
		d.skip("clock", "needs the metadata")
		return
	case m.date.IsZero():
		d.skip("clock", "the server sent no Date header")
		return
	}
	// Date has whole seconds: the server's clock was in [date, date+1s)
	// while the local clock was between start and end.
	mid := m.start.Add(m.end.Sub(m.start) / 2)
	skew := m.date.Add(500 * time.Millisecond).Sub(mid)
	secs := math.Round(skew.Abs().Seconds())
	dir := "behind"
	if skew < 0 {
		dir = "ahead of"
	}
	msg := fmt.Sprintf("the local clock is %.0f s %s the server's (Date header of %s)", secs, dir, m.url)
	const hint = "synchronise the clock with NTP (timedatectl set-ntp true): Maskinporten refuses grants issued in the future (\"Issue time is after now\") and expired ones (MP-130)"
	switch {
	case skew.Abs() > doctorSkewFail:
		d.fail("clock", exitRefused, msg, hint)
	case skew.Abs() > doctorSkewWarn:
		d.warn("clock", msg, hint)
	default:
		d.ok("clock", "within %s of the server's clock (Date header)", inspect.Duration(doctorSkewWarn))
	}
}

func (d *doctorRun) checkTokenRequest() {
	if len(d.c.StringSlice("scope")) == 0 || strings.TrimSpace(d.c.String("client-id")) == "" {
		d.skip("token-request", "give --client-id and --scope to try a real token request")
		return
	}
	switch {
	case d.signer == nil:
		d.skip("token-request", "needs the key and its certificate")
		return
	case d.envFail || d.envr == nil:
		d.skip("token-request", "needs the environment")
		return
	case d.meta != nil && d.meta.err != nil:
		d.skip("token-request", "the metadata could not be read")
		return
	}
	req, err := requestFromFlags(d.c)
	if err != nil {
		d.failErr("token-request", exitUsage, err, "fix the request flags")
		return
	}
	ctx, cancel := context.WithTimeout(d.c.Context, d.c.Duration("timeout"))
	defer cancel()
	cfg, err := d.e.grantConfig(ctx, d.c, d.signer)
	if err != nil {
		d.failErr("token-request", exitUsage, err, "fix the flags named")
		return
	}
	tok, err := cfg.Exchange(ctx, req)
	if err != nil {
		var te *grant.TokenError
		hint := "check the network and Maskinporten's status (status.digdir.no)"
		msg := err.Error()
		if errors.As(err, &te) {
			msg = fmt.Sprintf("%s answered HTTP %d", te.URL, te.StatusCode)
			if te.Code != "" {
				msg += " " + te.Code
			}
			if te.Description != "" {
				msg += ": " + te.Description
			}
			if te.MPCode != "" && !strings.Contains(te.Description, te.MPCode) {
				msg += " (" + te.MPCode + ")"
			}
			if te.Skew != 0 {
				msg += fmt.Sprintf("; its clock differs from the local one by %s", te.Skew.Round(time.Second))
			}
			hint = te.Hint
			if hint == "" {
				hint = "see Maskinporten's error documentation for the code"
			}
		}
		d.fail("token-request", exitCodeOr(err, exitUnavailable), msg, hint)
		return
	}
	d.ok("token-request", "Maskinporten issued a token for scope %q, valid %d s (not shown)", tok.Scope, tok.ExpiresIn)
}
