package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/internal/textsafe"
	"github.com/mp-hsm/mp-hsm/signer"
)

const catAdmin = "Self-service API"

// adminFlags: the key and Maskinporten flags but --client-id and --kid (the
// self-service client sends x5c), and the API's own.
func adminFlags(extra ...cli.Flag) []cli.Flag {
	mp := slices.DeleteFunc(mpFlags(), func(f cli.Flag) bool {
		n := f.Names()[0]
		return n == "client-id" || n == "kid"
	})
	return slices.Concat(keyFlags(), mp, []cli.Flag{
		&cli.StringFlag{Category: catAdmin, Name: "client-id", Usage: "the Maskinporten client `ID` whose keys to manage"},
		&cli.StringFlag{Category: catAdmin, Name: "admin-client-id", Usage: "the organisation's self-service client `ID` (its token authenticates the API calls)", EnvVars: []string{"MP_HSM_ADMIN_CLIENT_ID"}},
		&cli.StringFlag{Category: catAdmin, Name: "admin-api", Usage: "the self-service API's base `URL` (.../api/v1/; default: the environment's)", EnvVars: []string{"MP_HSM_ADMIN_API"}},
	}, adminKeyFlags(), extra)
}

// adminKeyFlags choose the self-service client's key on the key flags' token.
func adminKeyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Category: catAdmin, Name: "admin-key-id", Usage: "the self-service client's key by CKA_ID in `HEX`, on the token the key flags choose (default: the key flags' key)", EnvVars: []string{"MP_HSM_ADMIN_KEY_ID"}},
		&cli.StringFlag{Category: catAdmin, Name: "admin-key-label", Usage: "the self-service client's key by CKA_LABEL `LABEL`, on the token the key flags choose (default: the key flags' key)", EnvVars: []string{"MP_HSM_ADMIN_KEY_LABEL"}},
	}
}

// adminKeyChoice returns the key --admin-key-id and --admin-key-label
// choose, nil when neither is given.
func adminKeyChoice(c *cli.Context) (*hsm.KeySelector, error) {
	sel := &hsm.KeySelector{Label: c.String("admin-key-label")}
	if h := strings.TrimSpace(c.String("admin-key-id")); h != "" {
		var err error
		if sel.ID, err = parseKeyID("--admin-key-id", h); err != nil {
			return nil, err
		}
	}
	switch {
	case sel.ID == nil && sel.Label == "":
		return nil, nil
	case c.String("p12") != "":
		return nil, usagef("--admin-key-id and --admin-key-label choose a key on a token; with --p12 the file's key is the self-service client's")
	}
	return sel, nil
}

// parseKeyID reads the CKA_ID in hex that what gives: 01, 0a1b, 0x0a1b or 0a:1b.
func parseKeyID(what, h string) ([]byte, error) {
	id, err := hex.DecodeString(strings.TrimPrefix(strings.ReplaceAll(strings.ToLower(strings.TrimSpace(h)), ":", ""), "0x"))
	if err != nil || len(id) == 0 {
		return nil, usagef("%s %q: want the CKA_ID in hex, such as 01 or 0a1b (see mp-hsm list)", what, h)
	}
	return id, nil
}

func adminCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "admin",
		Usage: "manage Maskinporten clients through Digdir's self-service API",
		Subcommands: []*cli.Command{{
			Name:  "keys",
			Usage: "list, add or remove the keys registered on a client",
			Description: "Calls Digdir's self-service API as --admin-client-id, with a Maskinporten token got with the\n" +
				"chosen key and its certificate (x5c): scope idporten:dcr.read to list, idporten:dcr.write to\n" +
				"change. The API replaces a client's whole key set at once: add and remove keep the other keys.",
			Subcommands: []*cli.Command{
				{
					Name: "list", Usage: "show the client's keys: kid, alg, size, and the set's created and last_updated",
					Flags:  adminFlags(textOutputFlag()),
					Action: func(c *cli.Context) error { return e.adminKeys(c, "list") },
				},
				{
					Name: "add", Usage: "register the JWK or JWK set in FILE (- for stdin) beside the client's keys", ArgsUsage: "FILE|-",
					Description: "Refuses, before anything is sent, a key with private members, without kid, or with a use other\n" +
						"than sig; and before anything is changed, a kid the client has or a sixth key.",
					Flags:  adminFlags(textOutputFlag()),
					Action: func(c *cli.Context) error { return e.adminKeys(c, "add") },
				},
				{
					Name: "remove", Usage: "remove the key --kid from the client, keeping the others",
					Flags: adminFlags(textOutputFlag(),
						&cli.StringFlag{Category: catAdmin, Name: "kid", Usage: "`KID` of the key to remove"}),
					Action: func(c *cli.Context) error { return e.adminKeys(c, "remove") },
				},
				{
					Name: "rotate", Usage: "make a key on the token, register it beside the client's keys, prove it with a token, and remove --remove",
					Description: "In one login: generates the key pair --label (as key generate), registers its JWK (kid: the\n" +
						"thumbprint) on --client-id, gets a token for --client-id with --scope using the new kid, and only\n" +
						"then removes the key --remove, if given. On a failure it says what state the client is left in.",
					Flags: adminFlags(append(newKeyFlags(catAdmin), textOutputFlag(),
						&cli.StringSliceFlag{Category: catAdmin, Name: "scope", Usage: "`SCOPE` of --client-id to prove the new key with (repeatable)", EnvVars: []string{"MP_HSM_SCOPE"}},
						&cli.StringFlag{Category: catAdmin, Name: "remove", Usage: "`KID` of the old key to remove once the new one works"})...),
					Action: func(c *cli.Context) error { return e.adminRotate(c) },
				},
			},
		}},
	}
}

// adminKeys runs list, add or remove, checking input before the token.
func (e *env) adminKeys(c *cli.Context, op string) error {
	format, err := outputFormat(c, "text", "json")
	if err != nil {
		return err
	}
	clientID, adminID, err := adminClientIDs(c, "keys to manage")
	if err != nil {
		return err
	}
	var keys []admin.Key
	switch op {
	case "add":
		if c.NArg() != 1 {
			return usagef("admin keys add takes one FILE (or - for stdin) holding a JWK or a JWK set, as mp-hsm jwk prints")
		}
		name, data := c.Args().First(), []byte(nil)
		if name == "-" {
			data, err = io.ReadAll(io.LimitReader(e.stdin, safefile.MaxCertificates))
		} else {
			data, err = safefile.Read(name, safefile.MaxCertificates)
		}
		if err != nil {
			return usageErr(err)
		}
		if keys, err = admin.ParseKeys(data); err != nil {
			return usageErr(fmt.Errorf("%s: %w", name, err))
		}
		for _, k := range keys {
			if err := admin.CheckKey(k); err != nil {
				return usageErr(err)
			}
		}
	case "remove":
		if c.String("kid") == "" {
			return usagef("missing --kid: the key to remove (see mp-hsm admin keys list)")
		}
	}
	if c.NArg() > 0 && op != "add" {
		return usagef("admin keys %s takes no arguments, got %q", op, textsafe.Escape(c.Args().First()))
	}
	if err := adminPreflight(c); err != nil {
		return err
	}
	sel, err := adminKeyChoice(c)
	if err != nil {
		return err
	}
	s, err := e.openSigner(c, sel)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	api, _, err := e.adminAPI(ctx, c, adminID, s)
	if err != nil {
		return timedOut(ctx, c, err)
	}
	var set *admin.KeySet
	switch op {
	case "list":
		set, err = api.List(ctx, clientID)
	case "add":
		set, err = api.Add(ctx, clientID, keys...)
	case "remove":
		set, err = api.Remove(ctx, clientID, c.String("kid"))
	}
	if err != nil {
		return timedOut(ctx, c, adminExit(err))
	}
	return writeKeySet(e.stdout, format, clientID, set)
}

// adminClientIDs returns the required --client-id and --admin-client-id.
func adminClientIDs(c *cli.Context, what string) (clientID, adminID string, err error) {
	clientID, adminID = strings.TrimSpace(c.String("client-id")), strings.TrimSpace(c.String("admin-client-id"))
	switch {
	case clientID == "":
		err = usagef("missing --client-id: the client whose %s", what)
	case adminID == "":
		err = usagef("missing --admin-client-id (or MP_HSM_ADMIN_CLIENT_ID): the organisation's self-service client")
	}
	return clientID, adminID, err
}

// adminPreflight is preflight plus admin.CheckBaseURL of --admin-api.
func adminPreflight(c *cli.Context) error {
	if base := c.String("admin-api"); base != "" {
		if err := admin.CheckBaseURL(base, c.Bool("allow-insecure")); err != nil {
			return usageErr(fmt.Errorf("--admin-api: %w", err))
		}
	}
	return preflight(c)
}

// adminAPI returns the API client that authenticates as adminID with s's x5c.
func (e *env) adminAPI(ctx context.Context, c *cli.Context, adminID string, s signer.Signer) (*admin.Client, grant.Environment, error) {
	envr, _, err := e.resolveEnvironment(ctx, c, s.Chain())
	if err != nil {
		return nil, envr, err
	}
	base := c.String("admin-api")
	if base == "" {
		if base = map[string]string{"test": admin.TestAPI, "prod": admin.ProdAPI}[envr.Name]; base == "" {
			return nil, envr, usagef("missing --admin-api (or MP_HSM_ADMIN_API): the environment has no preset self-service API")
		}
	}
	if len(s.Chain()) == 0 {
		return nil, envr, withCode(exitToken, errors.New("the self-service client's key has no certificate on the token: the self-service client authenticates with x5c (its enterprise certificate); "+
			"choose that key with --admin-key-id or --admin-key-label (MP_HSM_ADMIN_KEY_ID, MP_HSM_ADMIN_KEY_LABEL)"))
	}
	cfg := &grant.Config{ClientID: adminID, Signer: s, Algorithm: c.String("alg"), Environment: envr,
		AllowInsecure: c.Bool("allow-insecure"), Logger: e.log}
	return &admin.Client{
		BaseURL:       base,
		AllowInsecure: c.Bool("allow-insecure"),
		Read:          cfg.TokenSource(ctx, grant.Request{Scopes: []string{admin.ScopeRead}}),
		Write:         cfg.TokenSource(ctx, grant.Request{Scopes: []string{admin.ScopeWrite}}),
	}, envr, nil
}

// adminExit maps admin's errors to exit codes: refusals and ErrChanged 2, the API's 4xx 4, 5xx 5.
func adminExit(err error) error {
	var ae *admin.APIError
	switch {
	case errors.Is(err, admin.ErrInvalidKey), errors.Is(err, admin.ErrKidTaken),
		errors.Is(err, admin.ErrTooManyKeys), errors.Is(err, admin.ErrKidNotFound), errors.Is(err, admin.ErrChanged):
		return usageErr(err)
	case errors.As(err, &ae) && ae.Status >= 500:
		return withCode(exitUnavailable, err)
	case errors.As(err, &ae):
		return withCode(exitRefused, err)
	}
	return err
}

// keySetJSON is what list, add and remove print with --output json.
type keySetJSON struct {
	ClientID    string       `json:"client_id"`
	Created     string       `json:"created,omitempty"`
	LastUpdated string       `json:"last_updated,omitempty"`
	Keys        []keyRowJSON `json:"keys"`
}

type keyRowJSON struct {
	Kid  string `json:"kid"`
	Kty  string `json:"kty"`
	Alg  string `json:"alg,omitempty"`
	Use  string `json:"use,omitempty"`
	Size int    `json:"size,omitempty"`
}

func writeKeySet(w io.Writer, format, clientID string, set *admin.KeySet) error {
	out := keySetJSON{ClientID: clientID, Keys: []keyRowJSON{}}
	if !set.Created.IsZero() {
		out.Created = set.Created.UTC().Format(time.RFC3339)
		out.LastUpdated = set.LastUpdated.UTC().Format(time.RFC3339)
	}
	for _, k := range set.Keys {
		out.Keys = append(out.Keys, keyRowJSON{Kid: k.Kid, Kty: k.Kty, Alg: k.Alg, Use: k.Use, Size: k.Bits})
	}
	if format == "json" {
		return writeJSON(w, out)
	}
	if len(out.Keys) == 0 {
		_, err := fmt.Fprintf(w, "client %s has no registered keys\n", textsafe.Escape(clientID))
		return err
	}
	fmt.Fprintf(w, "client %s: %d key(s); set created %s, last updated %s\n", textsafe.Escape(clientID), len(out.Keys), dash(out.Created), dash(out.LastUpdated))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tALG\tKTY\tSIZE")
	// Escaped: a kid with a newline could forge a row.
	for _, k := range out.Keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", textsafe.Escape(k.Kid), dash(textsafe.Escape(k.Alg)), textsafe.Escape(k.Kty), k.Size)
	}
	return tw.Flush()
}
