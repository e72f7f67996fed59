package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/changelock"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/internal/textsafe"
	"github.com/mp-hsm/mp-hsm/signer"
)

// writableToken is a token opened read-write, logged in and locked.
type writableToken struct {
	mod   *hsm.Module
	tok   *hsm.Token
	ks    *keySetup
	locks []*changelock.Lock // the token's, then the module's
}

func (w *writableToken) close() {
	if w.tok != nil {
		w.tok.Close()
	}
	w.mod.Close()
	for _, l := range w.locks {
		l.Unlock()
	}
}

// openWritable opens the chosen token read-write under the module's and the
// token's change locks (waited for --timeout, else 30 s), so that two commands
// cannot both take a free label, and logs in once, never retried.
func (e *env) openWritable(ctx context.Context, c *cli.Context) (_ *writableToken, err error) {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(c.Duration("timeout"), 30*time.Second))
	defer cancel()
	ks, err := e.resolveKey(c)
	if err != nil {
		return nil, err
	}
	cfg := ks.cfg
	// The module's lock comes before the module is loaded: see
	// changelock.AcquireModule for why the token's alone is too late.
	mlock, err := changelock.AcquireModule(ctx, cfg.Module)
	if err != nil {
		return nil, err
	}
	mod, err := hsm.OpenWith(cfg.Module, cfg.ModuleOptions)
	if err != nil {
		mlock.Unlock()
		return nil, withCode(exitToken, err)
	}
	w := &writableToken{mod: mod, ks: ks, locks: []*changelock.Lock{mlock}}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	slot, err := mod.FindSlot(cfg.Token)
	if err != nil {
		return nil, ks.explain(err)
	}
	ti := slot.Token
	if ti == nil {
		return nil, withCode(exitToken, fmt.Errorf("slot %d has no token", slot.ID))
	}
	lock, err := changelock.Acquire(ctx, "token", ti.Manufacturer, ti.Model, ti.Serial, ti.Label)
	if err != nil {
		return nil, err
	}
	w.locks = append([]*changelock.Lock{lock}, w.locks...)
	opts := cfg.TokenOptions()
	opts.ReadWrite = true
	if w.tok, err = mod.OpenSlot(hsm.Slot{ID: slot.ID}, opts); err != nil {
		return nil, err
	}
	if err := w.tok.Login(cfg.PIN, cfg.Login); err != nil {
		return nil, ks.explain(err)
	}
	return w, nil
}

// maxLabel bounds a new key's CKA_LABEL: cards keep labels short, list prints a column.
const maxLabel = 64

// newKeyFlags are the new key pair's, of key generate and admin keys rotate.
func newKeyFlags(category string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Category: category, Name: "label", Usage: "CKA_LABEL `L` of the new key pair (required)"},
		&cli.StringFlag{Category: category, Name: "id", Usage: "CKA_ID of the new key pair in `HEX` (default: 8 random bytes)"},
		&cli.StringFlag{Category: category, Name: "type", Value: "rsa:2048", Usage: "key `TYPE`: rsa:2048, rsa:3072 or ec:p256"},
	}
}

// generateOptions reads --label, --id and --type, before any PIN is asked.
func generateOptions(c *cli.Context) (hsm.GenerateOptions, error) {
	o := hsm.GenerateOptions{Label: c.String("label")}
	if o.Label == "" {
		return o, usagef("--label is needed: the CKA_LABEL of the new key pair")
	}
	if err := textsafe.Check("--label", o.Label, maxLabel); err != nil {
		return o, usageErr(err)
	}
	if h := c.String("id"); h != "" {
		id, err := parseKeyID("--id", h)
		if err != nil {
			return o, err
		}
		o.ID = id
	}
	spec, err := hsm.ParseKeySpec(c.String("type"))
	if err != nil {
		return o, usageErr(fmt.Errorf("--type: %w", err))
	}
	o.Spec = spec
	return o, nil
}

// generatedJSON is what key generate prints with --output json.
type generatedJSON struct {
	ID    string `json:"id"`
	Label string `json:"label"`
	Type  string `json:"type"`
	Kid   string `json:"kid"`
}

// keyGenerate makes a key pair on the token.
func (e *env) keyGenerate(c *cli.Context) error {
	format, err := outputFormat(c, "text", "json")
	if err != nil {
		return err
	}
	opts, err := generateOptions(c)
	if err != nil {
		return err
	}
	w, err := e.openWritable(c.Context, c)
	if err != nil {
		return err
	}
	defer w.close()
	nk := &tokenKey{tok: w.tok, opts: opts}
	pub, err := nk.Generate()
	if err != nil {
		return err
	}
	info := nk.key.Info()
	kid, err := signer.Thumbprint(pub)
	if err != nil {
		return err
	}
	out := generatedJSON{ID: info.IDHex(), Label: info.Label, Type: opts.Spec.String(), Kid: kid}
	if format == "json" {
		return writeJSON(e.stdout, out)
	}
	_, err = fmt.Fprintf(e.stdout, "generated %s key pair on the token\nid:    %s\nlabel: %s\nkid:   %s (RFC 7638 thumbprint)\nuse it with: --key-id %s\n",
		out.Type, out.ID, out.Label, out.Kid, out.ID)
	return err
}

// certWrite is one certificate of import-cert's plan.
type certWrite struct {
	cert     *x509.Certificate
	id       []byte
	label    string
	forKey   bool
	key      string              // the key's description, for a key's certificate
	replaces []*x509.Certificate // the key's certificates from other issuers, removed with --replace
}

// keyImportCert writes a file's certificates onto the token (a key's with its
// CKA_ID and label), all checked first under the change lock, then read back.
func (e *env) keyImportCert(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("key import-cert takes one FILE of PEM certificates")
	}
	path := c.Args().First()
	data, err := safefile.Read(path, safefile.MaxCertificates)
	if err != nil {
		return usageErr(err)
	}
	all, err := signer.ReadCertificates(data)
	if err != nil {
		return usageErr(fmt.Errorf("%s: %w", path, err))
	}
	var certs []*x509.Certificate // each once, in the file's order
	now := time.Now()
	for _, cert := range all {
		if slices.ContainsFunc(certs, cert.Equal) {
			continue
		}
		certs = append(certs, cert)
		if (now.After(cert.NotAfter) || now.Before(cert.NotBefore)) && !c.Bool("force") {
			return usagef("%s: certificate %q is valid from %s to %s, not now: Maskinporten refuses it; --force writes it anyway; nothing written",
				path, textsafe.Escape(cert.Subject.CommonName), cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	w, err := e.openWritable(c.Context, c)
	if err != nil {
		return err
	}
	defer w.close()
	plan, err := planImport(w.tok, path, certs, c.Bool("replace"))
	if err != nil {
		return err
	}
	return e.writeImport(w.tok, plan)
}

// planImport decides, reading the token only, what to write, or refuses.
func planImport(tok *hsm.Token, path string, certs []*x509.Certificate, replace bool) ([]certWrite, error) {
	keys, err := tok.Keys()
	if err != nil {
		return nil, err
	}
	onToken, err := tok.Certificates()
	if err != nil {
		return nil, err
	}
	var plan []certWrite
	matched := false
	for _, cert := range certs {
		cn := textsafe.Escape(cert.Subject.CommonName)
		wr := certWrite{cert: cert, id: cert.SubjectKeyId, label: cert.Subject.CommonName}
		for _, k := range keys {
			if signer.MatchCertificate(k.Public, cert) == nil {
				wr = certWrite{cert: cert, id: k.ID, label: k.Label, forKey: true, key: textsafe.Escape(k.String())}
				break
			}
		}
		there := false
		for _, o := range onToken {
			switch {
			case bytes.Equal(o.Cert.Raw, cert.Raw):
				there = true
			case wr.forKey && signer.MatchCertificate(o.Cert.PublicKey, cert) == nil && !bytes.Equal(o.Cert.RawIssuer, cert.RawIssuer):
				wr.replaces = append(wr.replaces, o.Cert)
			}
		}
		switch {
		case !wr.forKey && !cert.IsCA:
			return nil, usagef("%s: certificate %q holds the public key of no key on the token and is not a CA certificate (see mp-hsm list); nothing written", path, cn)
		case wr.forKey && there:
			return nil, usagef("%s: certificate %q is already on the token beside key %s; nothing written", path, cn, wr.key)
		case there:
			continue // an issuer already there
		case len(wr.replaces) > 0 && !replace:
			return nil, usagef("%s: key %s already has certificate %q from issuer %q, and %q is from issuer %q: the token would hold two for one key; "+
				"--replace writes the new one and removes the other; nothing written",
				path, wr.key, textsafe.Escape(wr.replaces[0].Subject.CommonName), textsafe.Escape(wr.replaces[0].Issuer.CommonName),
				cn, textsafe.Escape(cert.Issuer.CommonName))
		}
		matched = matched || wr.forKey
		plan = append(plan, wr)
	}
	if !matched {
		return nil, usagef("%s: no certificate in it holds the public key of a key on the token (see mp-hsm list); nothing written", path)
	}
	return plan, nil
}

// writeImport writes the plan and reports it as read back, or what was written.
func (e *env) writeImport(tok *hsm.Token, plan []certWrite) error {
	var done []string
	for _, wr := range plan {
		if err := tok.WriteCertificate(wr.cert, wr.id, wr.label); err != nil && !(errors.Is(err, hsm.ErrObjectExists) && !wr.forKey) {
			if len(done) == 0 {
				return fmt.Errorf("%w\nnothing was written", err)
			}
			return fmt.Errorf("%w\nalready written: %s (see mp-hsm list); import the rest from a file without them", err, strings.Join(done, ", "))
		}
		done = append(done, strconv.Quote(textsafe.Escape(wr.cert.Subject.CommonName)))
		for _, old := range wr.replaces {
			if _, err := tok.DeleteCertificate(old); err != nil {
				return fmt.Errorf("%w\ncertificate %q is written beside key %s, but the old one, %q, is still there: remove it with pkcs11-tool --login --delete-object --type cert --id %x",
					err, textsafe.Escape(wr.cert.Subject.CommonName), wr.key, textsafe.Escape(old.Subject.CommonName), wr.id)
			}
		}
	}
	onToken, err := tok.Certificates()
	if err != nil {
		return fmt.Errorf("the certificates were written, but reading them back failed: %w (see mp-hsm list)", err)
	}
	for _, wr := range plan {
		cn := textsafe.Escape(wr.cert.Subject.CommonName)
		if !slices.ContainsFunc(onToken, func(o hsm.Certificate) bool { return o.Cert.Equal(wr.cert) }) {
			return withCode(exitToken, fmt.Errorf("certificate %q was written but is not on the token when read back (see mp-hsm list)", cn))
		}
		if wr.forKey {
			fmt.Fprintf(e.stdout, "wrote certificate %q beside key %s\n", cn, wr.key)
			for _, old := range wr.replaces {
				fmt.Fprintf(e.stdout, "removed certificate %q (issuer %q) of the same key\n", textsafe.Escape(old.Subject.CommonName), textsafe.Escape(old.Issuer.CommonName))
			}
		} else {
			fmt.Fprintf(e.stdout, "wrote issuer certificate %q\n", cn)
		}
	}
	return nil
}
