//go:build cgo

package main

import (
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/signer"
)

// writableToken is a token opened read-write and logged in, with its
// module; close closes both.
type writableToken struct {
	mod *hsm.Module
	tok *hsm.Token
	ks  *keySetup
}

func (w *writableToken) close() {
	w.tok.Close()
	w.mod.Close()
}

// openWritable opens the token the key flags choose in a read-write
// session and logs in: one C_Login, never retried (hsm.Token.Login).
func (e *env) openWritable(c *cli.Context) (*writableToken, error) {
	ks, err := e.resolveKey(c)
	if err != nil {
		return nil, err
	}
	cfg := ks.cfg
	mod, err := hsm.OpenWith(cfg.Module, cfg.ModuleOptions)
	if err != nil {
		return nil, withCode(exitToken, err)
	}
	slot, err := mod.FindSlot(cfg.Token)
	if err != nil {
		mod.Close()
		return nil, ks.explainSelection(e.explainKeyError(err))
	}
	opts := cfg.TokenOptions()
	opts.ReadWrite = true
	tok, err := mod.OpenToken(slot.ID, opts)
	if err != nil {
		mod.Close()
		return nil, err
	}
	if err := tok.Login(cfg.PIN, cfg.Login); err != nil {
		tok.Close()
		mod.Close()
		return nil, explainPINError(err, ks)
	}
	return &writableToken{mod: mod, tok: tok, ks: ks}, nil
}

// generateOptions reads --label, --id and --type, before any PIN is asked.
func generateOptions(c *cli.Context) (hsm.GenerateOptions, error) {
	o := hsm.GenerateOptions{Label: c.String("label")}
	if o.Label == "" {
		return o, usagef("--label is needed: the CKA_LABEL of the new key pair")
	}
	if h := c.String("id"); h != "" {
		id, err := hex.DecodeString(strings.TrimPrefix(strings.ReplaceAll(strings.ToLower(h), ":", ""), "0x"))
		if err != nil || len(id) == 0 {
			return o, usagef("--id %q: want the CKA_ID in hex, such as 01 or 0a1b", h)
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
	w, err := e.openWritable(c)
	if err != nil {
		return err
	}
	defer w.close()
	key, err := w.tok.GenerateKey(opts)
	if errors.Is(err, hsm.ErrObjectExists) {
		return usageErr(fmt.Errorf("%w\nchoose another --label or --id (see mp-hsm list)", err))
	}
	if err != nil {
		return err
	}
	info := key.Info()
	kid, err := signer.Thumbprint(key.Public())
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

// keyImportCert writes the certificates of a file onto the token: each
// one that holds a key's public key with that key's CKA_ID and label, the
// others (issuers) with their SubjectKeyId and common name.
func (e *env) keyImportCert(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("key import-cert takes one FILE of PEM certificates")
	}
	path := c.Args().First()
	data, err := safefile.Read(path, safefile.MaxCertificates)
	if err != nil {
		return usageErr(err)
	}
	certs, err := signer.ReadCertificates(data)
	if err != nil {
		return usageErr(fmt.Errorf("%s: %w", path, err))
	}
	w, err := e.openWritable(c)
	if err != nil {
		return err
	}
	defer w.close()
	keys, err := w.tok.Keys()
	if err != nil {
		return err
	}
	type write struct {
		i         int
		id        []byte
		label     string
		forKey    bool
		keyString string
	}
	var plan []write
	matched := false
	for i, cert := range certs {
		wr := write{i: i, id: cert.SubjectKeyId, label: cert.Subject.CommonName}
		for _, k := range keys {
			if pub, ok := k.Public.(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(cert.PublicKey) {
				wr = write{i: i, id: k.ID, label: k.Label, forKey: true, keyString: k.String()}
				matched = true
				break
			}
		}
		if !wr.forKey && !cert.IsCA {
			return usagef("%s: certificate %q holds the public key of no key on the token and is not a CA certificate (see mp-hsm list); nothing written", path, cert.Subject.CommonName)
		}
		plan = append(plan, wr)
	}
	if !matched {
		return usagef("%s: no certificate in it holds the public key of a key on the token (see mp-hsm list); nothing written", path)
	}
	for _, wr := range plan {
		cert := certs[wr.i]
		err := w.tok.WriteCertificate(cert, wr.id, wr.label)
		switch {
		case errors.Is(err, hsm.ErrObjectExists) && !wr.forKey:
			continue // an issuer already there
		case errors.Is(err, hsm.ErrObjectExists):
			return usageErr(err)
		case err != nil:
			return err
		}
		if wr.forKey {
			fmt.Fprintf(e.stdout, "wrote certificate %q beside key %s\n", cert.Subject.CommonName, wr.keyString)
		} else {
			fmt.Fprintf(e.stdout, "wrote issuer certificate %q\n", cert.Subject.CommonName)
		}
	}
	return nil
}
