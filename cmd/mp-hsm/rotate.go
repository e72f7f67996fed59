package main

import (
	"cmp"
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/textsafe"
	"github.com/mp-hsm/mp-hsm/signer/p11"
)

// rotatedJSON is what admin keys rotate prints with --output json.
type rotatedJSON struct {
	ClientID string `json:"client_id"`
	generatedJSON
	Removed string `json:"removed,omitempty"`
}

// tokenKey is admin.NewKey on a writable, logged-in and locked token.
type tokenKey struct {
	tok  *hsm.Token
	opts hsm.GenerateOptions
	key  *hsm.Key // once generated
}

// Check refuses a label or id the token has (hsm.ErrObjectExists).
func (k *tokenKey) Check() error {
	if err := k.tok.CheckFree(k.opts.Label, k.opts.ID); err != nil {
		return usageErr(fmt.Errorf("%w\nchoose another --label or --id; nothing was changed", err))
	}
	return nil
}

// Generate makes the key pair (for key generate too).
func (k *tokenKey) Generate() (crypto.PublicKey, error) {
	key, err := k.tok.GenerateKey(k.opts)
	if errors.Is(err, hsm.ErrObjectExists) {
		return nil, usageErr(fmt.Errorf("%w\nchoose another --label or --id (see mp-hsm list)", err))
	}
	if err != nil {
		return nil, err
	}
	k.key = key
	return key.Public(), nil
}

// Undo names the tool that deletes the new key: mp-hsm deletes no key.
func (k *tokenKey) Undo() string {
	id := fmt.Sprintf("%x", k.opts.ID)
	if k.key != nil {
		id = k.key.Info().IDHex()
	}
	return fmt.Sprintf("pkcs11-tool --login --delete-object --type privkey --id %s (and --type pubkey)", id)
}

// adminRotate runs admin.Client.Rotate with a key made on the token, in one
// locked read-write login that the self-service key signs through too.
func (e *env) adminRotate(c *cli.Context) error {
	format, err := outputFormat(c, "text", "json")
	if err != nil {
		return err
	}
	clientID, adminID, err := adminClientIDs(c, "key to rotate")
	if err != nil {
		return err
	}
	if len(c.StringSlice("scope")) == 0 {
		return usagef("missing --scope: a scope of --client-id, to prove the new key with a token before anything is removed")
	}
	opts, err := generateOptions(c)
	if err != nil {
		return err
	}
	adminKey, err := adminKeyChoice(c)
	if err != nil {
		return err
	}
	if err := adminPreflight(c); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	w, err := e.openWritable(ctx, c)
	if err != nil {
		return timedOut(ctx, c, err)
	}
	defer w.close()
	authKey, err := w.tok.FindKey(*cmp.Or(adminKey, &w.ks.cfg.Key))
	if err != nil {
		return explainKeyError(err)
	}
	self, err := p11.New(authKey, p11.Options{ExtraChain: w.ks.cfg.ExtraChain})
	if err != nil {
		return err
	}
	api, envr, err := e.adminAPI(ctx, c, adminID, self)
	if err != nil {
		return timedOut(ctx, c, err)
	}
	nk := &tokenKey{tok: w.tok, opts: opts}
	prove := func(ctx context.Context, kid string) error {
		ns, err := p11.New(nk.key, p11.Options{})
		if err != nil {
			return err
		}
		cfg := &grant.Config{ClientID: clientID, Signer: ns, KeyID: kid, Algorithm: c.String("alg"), Environment: envr,
			AllowInsecure: c.Bool("allow-insecure"), Logger: e.log}
		_, err = cfg.Exchange(ctx, grant.Request{Scopes: c.StringSlice("scope")})
		return err
	}
	res, err := api.Rotate(ctx, admin.Rotation{ClientID: clientID, Key: nk, Prove: prove, Remove: c.String("remove")})
	if err != nil {
		return timedOut(ctx, c, adminExit(err))
	}
	info := nk.key.Info()
	out := rotatedJSON{clientID, generatedJSON{ID: info.IDHex(), Label: info.Label, Type: opts.Spec.String(), Kid: res.Kid}, res.Removed}
	if format == "json" {
		return writeJSON(e.stdout, out)
	}
	esc := textsafe.Escape // kids come from the API, the label and client id from the user
	fmt.Fprintf(e.stdout, "new %s key on the token: id %s, label %s\nregistered on client %s as kid %s, and a token with it was issued\n",
		out.Type, out.ID, esc(out.Label), esc(clientID), esc(out.Kid))
	if out.Removed != "" {
		fmt.Fprintf(e.stdout, "removed kid %s from client %s\n", esc(out.Removed), esc(clientID))
	}
	fmt.Fprintf(e.stdout, "client %s now has (read back from the API): %s\n", esc(clientID), esc(strings.Join(res.Set.Kids(), ", ")))
	_, err = fmt.Fprintf(e.stdout, "use it with: --key-id %s --kid %s\n", out.ID, esc(out.Kid))
	return err
}
