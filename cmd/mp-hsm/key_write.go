package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/changelock"
	"github.com/mp-hsm/mp-hsm/internal/textsafe"
	"github.com/mp-hsm/mp-hsm/signer"
)

// writableToken is a token opened read-write, logged in and locked.
type writableToken struct {
	mod  *hsm.Module
	tok  *hsm.Token
	ks   *keySetup
	lock *changelock.Lock
}

func (w *writableToken) close() {
	if w.tok != nil {
		w.tok.Close()
	}
	w.mod.Close()
	if w.lock != nil {
		w.lock.Unlock()
	}
}

// openWritable opens the chosen token read-write under its change lock
// (so that two commands cannot both take a free label) and logs in once,
// never retried.
func (e *env) openWritable(ctx context.Context, c *cli.Context) (_ *writableToken, err error) {
	ks, err := e.resolveKey(c)
	if err != nil {
		return nil, err
	}
	cfg := ks.cfg
	mod, err := hsm.OpenWith(cfg.Module, cfg.ModuleOptions)
	if err != nil {
		return nil, withCode(exitToken, err)
	}
	w := &writableToken{mod: mod, ks: ks}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	slot, err := mod.FindSlot(cfg.Token)
	if err != nil {
		return nil, ks.explainSelection(e.explainKeyError(err))
	}
	ti := slot.Token
	if ti == nil {
		return nil, withCode(exitToken, fmt.Errorf("slot %d has no token", slot.ID))
	}
	if w.lock, err = changelock.Acquire(ctx, "token", ti.Manufacturer, ti.Model, ti.Serial, ti.Label); err != nil {
		return nil, err
	}
	opts := cfg.TokenOptions()
	opts.ReadWrite = true
	if w.tok, err = mod.OpenToken(slot.ID, opts); err != nil {
		return nil, err
	}
	if err := w.tok.Login(cfg.PIN, cfg.Login); err != nil {
		return nil, explainPINError(err, ks)
	}
	return w, nil
}

// changeContext bounds the wait for the token's change lock: --timeout, else 30 s.
func changeContext(c *cli.Context) (context.Context, context.CancelFunc) {
	d := c.Duration("timeout")
	if d <= 0 {
		d = 30 * time.Second
	}
	return context.WithTimeout(c.Context, d)
}

// maxLabel bounds a new key's CKA_LABEL: PKCS#11 sets none, but cards
// keep labels short and list prints them in a column.
const maxLabel = 64

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
		id, err := parseKeyID(h)
		if err != nil {
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
	ctx, cancel := changeContext(c)
	defer cancel()
	w, err := e.openWritable(ctx, c)
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
