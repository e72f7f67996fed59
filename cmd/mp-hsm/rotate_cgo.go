//go:build cgo

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/signer/p11"
)

// rotatedJSON is what admin keys rotate prints with --output json.
type rotatedJSON struct {
	ClientID string `json:"client_id"`
	ID       string `json:"id"`
	Label    string `json:"label"`
	Type     string `json:"type"`
	Kid      string `json:"kid"`
	Removed  string `json:"removed,omitempty"`
}

// adminRotate generates a key, registers it beside the client's keys,
// proves it with a token, and removes --remove. The token is opened
// read-write and logged in once; the self-service client signs with the
// key the key flags choose, on the same login.
func (e *env) adminRotate(c *cli.Context) error {
	format, err := outputFormat(c, "text", "json")
	if err != nil {
		return err
	}
	clientID := strings.TrimSpace(c.String("client-id"))
	adminID := strings.TrimSpace(c.String("admin-client-id"))
	switch {
	case clientID == "":
		return usagef("missing --client-id: the client whose key to rotate")
	case adminID == "":
		return usagef("missing --admin-client-id (or MP_HSM_ADMIN_CLIENT_ID): the organisation's self-service client")
	case len(c.StringSlice("scope")) == 0:
		return usagef("missing --scope: a scope of --client-id, to prove the new key with a token before anything is removed")
	}
	opts, err := generateOptions(c)
	if err != nil {
		return err
	}
	if err := preflight(c); err != nil {
		return err
	}
	w, err := e.openWritable(c)
	if err != nil {
		return err
	}
	defer w.close()
	authKey, err := w.tok.FindKey(w.ks.cfg.Key)
	if err != nil {
		return e.explainKeyError(err)
	}
	self, err := p11.New(authKey, p11.Options{ExtraChain: w.ks.cfg.ExtraChain})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	api, envr, err := e.adminAPI(ctx, c, adminID, self)
	if err != nil {
		return timedOut(ctx, c, err)
	}

	key, err := w.tok.GenerateKey(opts)
	if errors.Is(err, hsm.ErrObjectExists) {
		return usageErr(fmt.Errorf("%w\nchoose another --label or --id; nothing was changed", err))
	}
	if err != nil {
		return fmt.Errorf("%w\nnothing was changed", err)
	}
	info := key.Info()
	kid, err := signer.Thumbprint(key.Public())
	if err != nil {
		return err
	}
	out := rotatedJSON{ClientID: clientID, ID: info.IDHex(), Label: info.Label, Type: opts.Spec.String(), Kid: kid}
	state := func(err error, what string) error {
		return fmt.Errorf("%w\n%s", err, what)
	}
	j, err := signer.PublicJWK(key.Public(), "", kid)
	if err != nil {
		return state(err, fmt.Sprintf("the new key (--key-id %s) is on the token; client %s is unchanged", out.ID, clientID))
	}
	jk, err := admin.ParseKeys(mustMarshal(j))
	if err != nil {
		return err
	}
	if _, err := api.Add(ctx, clientID, jk...); err != nil {
		return timedOut(ctx, c, adminExit(state(err, fmt.Sprintf("the new key (--key-id %s) is on the token but not registered; client %s is unchanged", out.ID, clientID))))
	}
	ns, err := p11.New(key, p11.Options{})
	if err != nil {
		return err
	}
	cfg := &grant.Config{ClientID: clientID, Signer: ns, KeyID: kid, Algorithm: c.String("alg"), Environment: envr,
		AllowInsecure: c.Bool("allow-insecure"), Logger: e.log}
	if _, err := cfg.Exchange(ctx, grant.Request{Scopes: c.StringSlice("scope")}); err != nil {
		return timedOut(ctx, c, state(err, fmt.Sprintf("the new key %s is registered on client %s beside its other keys, but a token with it failed; "+
			"nothing was removed (mp-hsm admin keys remove --client-id %s --kid %s takes the new one away)", kid, clientID, clientID, kid)))
	}
	if old := c.String("remove"); old != "" {
		if _, err := api.Remove(ctx, clientID, old); err != nil {
			return timedOut(ctx, c, adminExit(state(err, fmt.Sprintf("the new key %s is registered and works (--key-id %s --kid %s); the old key %s is still registered", kid, out.ID, kid, old))))
		}
		out.Removed = old
	}
	if format == "json" {
		return writeJSON(e.stdout, out)
	}
	fmt.Fprintf(e.stdout, "new %s key on the token: id %s, label %s\nregistered on client %s as kid %s, and a token with it was issued\n",
		out.Type, out.ID, out.Label, clientID, kid)
	if out.Removed != "" {
		fmt.Fprintf(e.stdout, "removed kid %s from client %s\n", out.Removed, clientID)
	}
	_, err = fmt.Fprintf(e.stdout, "use it with: --key-id %s --kid %s\n", out.ID, kid)
	return err
}
