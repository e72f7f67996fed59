package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/internal/textsafe"
	"github.com/mp-hsm/mp-hsm/signer"
)

// certWrite is one certificate of import-cert's plan.
type certWrite struct {
	cert     *x509.Certificate
	id       []byte
	label    string
	forKey   bool
	key      string              // the key's description, for a key's certificate
	replaces []*x509.Certificate // the key's certificates from other issuers, removed with --replace
}

// keyImportCert writes a file's certificates onto the token: a key's with
// that key's CKA_ID and label, issuers with their SubjectKeyId. The whole
// file is checked under the token's change lock before anything is written,
// and the token is read back after.
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
	for _, cert := range all {
		if !slices.ContainsFunc(certs, cert.Equal) {
			certs = append(certs, cert)
		}
	}
	now := time.Now()
	for _, cert := range certs {
		if (now.After(cert.NotAfter) || now.Before(cert.NotBefore)) && !c.Bool("force") {
			return usagef("%s: certificate %q is valid from %s to %s, not now: Maskinporten refuses it; --force writes it anyway; nothing written",
				path, textsafe.Escape(cert.Subject.CommonName), cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	ctx, cancel := changeContext(c)
	defer cancel()
	w, err := e.openWritable(ctx, c)
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
			if publicEqual(k.Public, cert.PublicKey) {
				wr = certWrite{cert: cert, id: k.ID, label: k.Label, forKey: true, key: textsafe.Escape(k.String())}
				break
			}
		}
		there := false
		for _, o := range onToken {
			switch {
			case bytes.Equal(o.Cert.Raw, cert.Raw):
				there = true
			case wr.forKey && publicEqual(o.Cert.PublicKey, cert.PublicKey) && !bytes.Equal(o.Cert.RawIssuer, cert.RawIssuer):
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

// writeImport writes the plan and reports what the token then holds; on a
// failure it says what was written.
func (e *env) writeImport(tok *hsm.Token, plan []certWrite) error {
	var done []string
	fail := func(err error) error {
		if len(done) == 0 {
			return fmt.Errorf("%w\nnothing was written", err)
		}
		return fmt.Errorf("%w\nalready written: %s (see mp-hsm list); import the rest from a file without them", err, joinQuoted(done))
	}
	for _, wr := range plan {
		if err := tok.WriteCertificate(wr.cert, wr.id, wr.label); err != nil && !(errors.Is(err, hsm.ErrObjectExists) && !wr.forKey) {
			return fail(err)
		}
		done = append(done, textsafe.Escape(wr.cert.Subject.CommonName))
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

func publicEqual(a, b crypto.PublicKey) bool {
	pa, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pa.Equal(b)
}

func joinQuoted(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}
