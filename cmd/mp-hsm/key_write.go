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

// writableToken is a token opened read-write and logged in, with its
// module; close closes both.
type writableToken struct {
	mod   *hsm.Module
	tok   *hsm.Token
	ks    *keySetup
	locks []*changelock.Lock // the token's, then the module's
}

func (w *writableToken) close() {
	w.tok.Close()
	w.mod.Close()
	for _, l := range w.locks {
		l.Unlock()
	}
}

// openWritable takes the module's change lock, then opens the token the
// key flags choose in a read-write session, takes the token's change lock
// (waiting for each, until ctx ends, for another mp-hsm process that
// changes a token), and logs in: one C_Login, never retried
// (hsm.Token.Login). Everything the command reads from the module and the
// token and writes to it is done under the locks, so two commands at once
// cannot both find a label free and both take it, and neither loads the
// module while the other rewrites the token's store.
func (e *env) openWritable(ctx context.Context, c *cli.Context) (*writableToken, error) {
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
	fail := func(err error) (*writableToken, error) {
		mod.Close()
		mlock.Unlock()
		return nil, err
	}
	slot, err := mod.FindSlot(cfg.Token)
	if err != nil {
		return fail(ks.explainSelection(e.explainKeyError(err)))
	}
	ti := slot.Token
	if ti == nil {
		return fail(withCode(exitToken, fmt.Errorf("slot %d has no token", slot.ID)))
	}
	lock, err := changelock.Acquire(ctx, "token", ti.Manufacturer, ti.Model, ti.Serial, ti.Label)
	if err != nil {
		return fail(err)
	}
	opts := cfg.TokenOptions()
	opts.ReadWrite = true
	tok, err := mod.OpenToken(slot.ID, opts)
	if err != nil {
		lock.Unlock()
		return fail(err)
	}
	if err := tok.Login(cfg.PIN, cfg.Login); err != nil {
		tok.Close()
		lock.Unlock()
		return fail(explainPINError(err, ks))
	}
	return &writableToken{mod: mod, tok: tok, ks: ks, locks: []*changelock.Lock{lock, mlock}}, nil
}

// changeContext bounds how long a key command waits for another mp-hsm
// process's change of the same token: --timeout where the command has
// it, else 30 s.
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
