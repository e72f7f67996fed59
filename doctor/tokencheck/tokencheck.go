// Package tokencheck runs the doctor's checks of a key on a smart card or
// HSM (module, token, pin, login, key) through the same hsm and p11 calls
// as p11.Open, one step at a time, going on after a failure where it can.
//
// It never spends a PIN try the card warns about: no login when the PIN
// flags say locked or final try, and at most one C_Login.
package tokencheck

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// ModuleHint is the hint of a module that cannot be found or loaded.
const ModuleHint = "install the card's PKCS#11 module (apt install opensc for Buypass and Commfides cards) or give --module PATH"

// Checks finds the key p11.Open would find for Config, checking each step.
// Use a Checks once: Run calls FindKey, then Close.
type Checks struct {
	// Config is as for p11.Open, but the login never allows a final PIN try
	// and prompts only when Interactive.
	Config        p11.Config
	DefaultModule bool // Config.Module was found in the default places
	// Interactive says a person can answer the prompt or use a PIN pad;
	// without it and without Config.PIN no login is tried.
	Interactive bool
	OnPINPad    func()            // if set, called before a login on the PIN pad
	Explain     func(error) error // if set, wraps a token or key selection error, say to name the flags

	configErr  error // see Failed
	configHint string

	mod      *hsm.Module
	slot     hsm.Slot
	tok      *hsm.Token
	pinBlock bool // the PIN flags forbid a login
	loggedIn bool
	found    doctor.FoundKey
}

var _ doctor.KeyFinder = (*Checks)(nil)

// Failed returns a KeyFinder whose Config could not be made: the module
// check fails with err and hint, the rest are skipped.
func Failed(err error, hint string) doctor.KeyFinder {
	return &Checks{configErr: err, configHint: hint}
}

// FindKey runs the checks module, token, pin, login and key.
func (c *Checks) FindKey(ctx context.Context, report func(doctor.Result)) doctor.FoundKey {
	if c.Explain == nil {
		c.Explain = func(err error) error { return err }
	}
	for _, check := range []func() doctor.Result{c.checkModule, c.checkToken, c.checkPIN, c.checkLogin, c.checkKey} {
		report(check())
	}
	if c.tok != nil && !c.loggedIn {
		c.found.NoLogin = true
		c.found.Chain = c.certificateWithoutLogin()
	}
	return c.found
}

// Close closes the module, and so the token and the key. Idempotent.
func (c *Checks) Close() error {
	if c.mod == nil {
		return nil
	}
	return c.mod.Close() // idempotent; closes its tokens, and so the key
}

func ok(check, msg string) doctor.Result   { return result(check, doctor.OK, msg, "") }
func skip(check, msg string) doctor.Result { return result(check, doctor.Skip, msg, "") }

// result is a Result of check; a failure of these checks is the token's.
func result(check string, s doctor.Status, msg, hint string) doctor.Result {
	r := doctor.Result{Check: check, Status: s, Message: msg, Hint: hint}
	if s == doctor.Fail {
		r.Class = doctor.ClassToken
	}
	return r
}

func (c *Checks) checkModule() doctor.Result {
	const check = "module"
	if c.configErr != nil {
		return doctor.Failed(check, doctor.ClassUsage, c.configErr, c.configHint)
	}
	path, err := c.Config.ModulePath()
	var m *hsm.Module
	if err == nil {
		m, err = hsm.OpenWith(path, c.Config.ModuleOptions)
	}
	if err != nil {
		return doctor.Failed(check, doctor.ClassToken, err, ModuleHint)
	}
	c.mod = m
	msg := m.Path()
	if info, err := m.Info(); err == nil {
		msg += fmt.Sprintf(" (%s %s, library %s, PKCS#11 %s)", info.Manufacturer, info.Description, info.Version, info.Cryptoki)
	}
	if c.DefaultModule || c.Config.Module == "" {
		msg += "; found in the default places"
	}
	return ok(check, msg)
}

func (c *Checks) checkToken() doctor.Result {
	const check = "token"
	if c.mod == nil {
		return skip(check, "needs the module")
	}
	slot, err := c.mod.FindSlot(c.Config.Token)
	if err != nil {
		return doctor.Failed(check, doctor.ClassToken, c.Explain(err), "insert the card (is pcscd running?), or choose the token with --slot, --token-label or --token-serial (see mp-hsm list)")
	}
	tok, err := c.mod.OpenSlot(hsm.Slot{ID: slot.ID}, c.Config.TokenOptions())
	if err != nil {
		return doctor.Failed(check, doctor.ClassToken, err, "the token is present but cannot be opened: reinsert the card and try again")
	}
	c.slot, c.tok = slot, tok
	t := slot.Token
	how := ""
	if c.Config.Token.IsZero() {
		how = "; the only token present"
	}
	return ok(check, fmt.Sprintf("%q (serial %s, %s %s) in slot %d%s", t.Label, t.Serial, t.Manufacturer, t.Model, slot.ID, how))
}

func (c *Checks) checkPIN() doctor.Result {
	const check = "pin"
	if c.tok == nil {
		return skip(check, "needs the token")
	}
	info, err := c.tok.Info()
	if err != nil {
		c.pinBlock = true
		return doctor.Failed(check, doctor.ClassToken, err, "reinsert the card and try again")
	}
	f := info.Flags
	c.slot.Token.Flags = f
	c.pinBlock = f.LoginRequired() && (f.PINLocked() || f.PINFinalTry()) // never spend a locked or final try
	switch {
	case !f.LoginRequired():
		return ok(check, "the token needs no login")
	case f.PINLocked():
		return result(check, doctor.Fail, "the PIN is locked (CKF_USER_PIN_LOCKED); no login was tried",
			"unblock the PIN with the PUK (or SO PIN) using the card issuer's tools, then run doctor again")
	case f.PINFinalTry():
		return result(check, doctor.Fail, "one more wrong PIN locks the token (CKF_USER_PIN_FINAL_TRY); no login was tried",
			"doctor never spends the final try: when you are certain of the PIN, log in once with mp-hsm token --allow-final-pin-try")
	case f.PINCountLow():
		return result(check, doctor.Warn, "a wrong PIN was entered since the last login (CKF_USER_PIN_COUNT_LOW)",
			"make sure the PIN is right before the next try: the card locks after a few wrong PINs")
	case f.PINToBeChanged():
		return result(check, doctor.Warn, "the token wants its PIN changed (CKF_USER_PIN_TO_BE_CHANGED)",
			"change the PIN with the card issuer's tools before using the key")
	case f.ProtectedAuthPath():
		return ok(check, "no PIN problems reported; the reader has a PIN pad")
	default:
		return ok(check, "no PIN problems reported")
	}
}

func (c *Checks) checkLogin() doctor.Result {
	const check = "login"
	switch {
	case c.tok == nil:
		return skip(check, "needs the token")
	case c.pinBlock:
		return skip(check, "not tried: see the PIN check")
	case !c.slot.Token.Flags.LoginRequired():
		c.loggedIn = true
		return skip(check, "the token needs no login")
	}
	var pin hsm.PINSource
	opts := hsm.LoginOptions{} // never the final try, whatever Config.Login says
	switch {
	case c.Config.PIN != nil:
		pin = c.Config.PIN
	case c.slot.Token.Flags.ProtectedAuthPath() && c.Interactive:
		if c.OnPINPad != nil {
			c.OnPINPad()
		}
	case c.Interactive:
		opts.Prompt = c.Config.Login.Prompt
	default:
		return skip(check, "no PIN given (MP_HSM_PIN or --pin-file) and no terminal to ask on; the key checks need a login")
	}
	if err := c.tok.Login(pin, opts); err != nil {
		hint := "check the PIN in MP_HSM_PIN or --pin-file before trying again: the card locks after a few wrong PINs"
		var pe *hsm.PINError
		if errors.As(err, &pe) && errors.Is(err, tokenerr.ErrPINLocked) {
			hint = "unblock the PIN with the PUK (or SO PIN) using the card issuer's tools"
			if !pe.Flags.PINLocked() { // tpm2-pkcs11 during the TPM's lockout: no PIN helps
				hint = "wait until the TPM's dictionary-attack lockout has passed (its recovery time), " +
					"or clear it with tpm2_dictionarylockout --clear-lockout, then run doctor again"
			}
		}
		return doctor.Failed(check, doctor.ClassToken, err, hint)
	}
	c.loggedIn = true
	return ok(check, "logged in")
}

func (c *Checks) checkKey() doctor.Result {
	const check = "key"
	switch {
	case c.tok == nil:
		return skip(check, "needs the token")
	case !c.loggedIn:
		return skip(check, "needs a login")
	}
	key, err := c.tok.FindKey(c.Config.Key)
	if err != nil {
		return doctor.Failed(check, doctor.ClassToken, c.Explain(err), "choose the key with --key-id or --key-label (see mp-hsm list)")
	}
	c.found.Key = key
	s, err := p11.New(key, p11.Options{ExtraChain: c.Config.ExtraChain})
	switch {
	case errors.Is(err, signer.ErrCertificateMismatch):
		c.found.CertErr = err // the certificate check reports it
	case err != nil:
		return doctor.Failed(check, doctor.ClassToken, err, "Maskinporten needs an RSA key of at least 2048 bits: choose another key (see mp-hsm list)")
	default:
		c.found.Signer, c.found.Chain = s, s.Chain()
	}
	how := ""
	if len(c.Config.Key.ID) == 0 && c.Config.Key.Label == "" {
		how = "; chosen as the authentication key"
	}
	if key.Info().AlwaysAuthenticate {
		return result(check, doctor.Warn, key.String()+how,
			"the key wants the PIN before every signature (CKA_ALWAYS_AUTHENTICATE): it is likely the card's signing key; use the authentication key (see mp-hsm list)")
	}
	return ok(check, key.String()+how)
}

// certificateWithoutLogin returns the chain of the one certificate the key
// selection points at without a login: by CKA_ID or label, else the one
// authentication certificate, else the only end-entity one.
func (c *Checks) certificateWithoutLogin() []*x509.Certificate {
	certs, err := c.tok.Certificates()
	if err != nil {
		return nil
	}
	sel := c.Config.Key
	named := len(sel.ID) > 0 || sel.Label != ""
	var pool, byName, auth, leaves []*x509.Certificate
	for _, hc := range certs {
		pool = append(pool, hc.Cert)
		if hc.Cert.IsCA {
			continue
		}
		leaves = append(leaves, hc.Cert)
		if named && (len(sel.ID) == 0 || string(sel.ID) == string(hc.ID)) && (sel.Label == "" || sel.Label == hc.Label) {
			byName = append(byName, hc.Cert)
		}
		if (hsm.KeyInfo{Certificate: &hc}).Authentication() { // the rule FindKey chooses keys by
			auth = append(auth, hc.Cert)
		}
	}
	one := leaves // auth is a subset of leaves
	switch {
	case named:
		one = byName
	case len(auth) == 1:
		one = auth
	}
	if len(one) != 1 {
		return nil
	}
	cert := one[0]
	chain, err := signer.BuildChain(cert.PublicKey, pool, c.Config.ExtraChain)
	if err != nil || len(chain) == 0 {
		return []*x509.Certificate{cert}
	}
	chain[0] = cert
	return chain
}
