package main

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/signer"
)

func emulateCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "emulate",
		Usage: "run a local Maskinporten emulator, as strict as the real one",
		Description: "Serves the metadata document, /token, /jwks and an Altinn exchange on --listen (default: a\n" +
			"free port on 127.0.0.1) until interrupted. It trusts the root certificates in --root for x5c\n" +
			"grants and the JWKs in --jwks for kid grants, and enforces Maskinporten's rules.\n\n" +
			"It serves a whole organisation: each --client-id (repeatable) gets the --org-number, --scope,\n" +
			"--delegated-by and --system-user-org given (system users: organisations that gave the clients an\n" +
			"Altinn system user, for system_user_org). --config FILE adds clients from a TOML file, each a\n" +
			"[[client]] table with its own fields: client-id, org-number, scopes, delegated-by,\n" +
			"system-user-org, jwks (a JWK set file of keys registered on it, relative to the file) and\n" +
			"consents (\"ID:FROM\" strings, as --consent, given to the client's organisation).\n\n" +
			"It prints its metadata URL on stdout as its first line; use it as --well-known. With\n" +
			"--admin-client-id it also serves Digdir's self-service API for the clients' keys and prints its\n" +
			"base (<URL>/api/v1/, for --admin-api) as the second line. --fail-next and --latency inject\n" +
			"faults for testing clients. --consent ID:FROM (repeatable) makes it know a consent given in\n" +
			"Altinn to --org-number's organisation, for consent tokens (authorization_details of type\n" +
			"urn:altinn:consent).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:0", Usage: "`HOST:PORT` to listen on (port 0: any free port)", EnvVars: []string{"MP_HSM_EMULATE_LISTEN"}},
			&cli.StringSliceFlag{Name: "root", Usage: "PEM `FILE` of trusted root certificates for x5c (repeatable)", EnvVars: []string{"MP_HSM_EMULATE_ROOT"}},
			&cli.StringFlag{Name: "jwks", Usage: "JWK set `FILE` of keys registered on the client, for kid grants", EnvVars: []string{"MP_HSM_EMULATE_JWKS"}},
			&cli.StringSliceFlag{Name: "client-id", Usage: "a client `ID` the emulator knows (repeatable; each gets the flags below)", EnvVars: []string{"MP_HSM_CLIENT_ID", "MASKINPORTEN_CLIENT_ID"}},
			&cli.StringFlag{Name: "org-number", Usage: "the clients' organisation number `ORGNR` (must match the certificate)", EnvVars: []string{"MP_HSM_EMULATE_ORG_NUMBER"}},
			&cli.StringSliceFlag{Name: "scope", Usage: "`SCOPE` the clients may ask for (repeatable)", EnvVars: []string{"MP_HSM_EMULATE_SCOPE"}},
			&cli.StringSliceFlag{Name: "delegated-by", Usage: "`ORGNR` that delegated to the clients (allowed consumer_org; repeatable)", EnvVars: []string{"MP_HSM_EMULATE_DELEGATED_BY"}},
			&cli.StringSliceFlag{Name: "system-user-org", Usage: "`ORGNR` with an Altinn system user for the clients (allowed system_user_org; repeatable)", EnvVars: []string{"MP_HSM_EMULATE_SYSTEM_USER_ORG"}},
			&cli.StringFlag{Name: "config", Usage: "TOML `FILE` of [[client]] tables: more clients, each with its own fields", EnvVars: []string{"MP_HSM_EMULATE_CONFIG"}},
			&cli.DurationFlag{Name: "token-lifetime", Value: 120 * time.Second, Usage: "lifetime of issued tokens", EnvVars: []string{"MP_HSM_EMULATE_TOKEN_LIFETIME"}},
			&cli.IntFlag{Name: "fail-next", Usage: "answer the next `N` token requests with --fail-status", EnvVars: []string{"MP_HSM_EMULATE_FAIL_NEXT"}},
			&cli.IntFlag{Name: "fail-status", Value: 503, Usage: "HTTP `STATUS` for --fail-next", EnvVars: []string{"MP_HSM_EMULATE_FAIL_STATUS"}},
			&cli.StringFlag{Name: "admin-client-id", Usage: "also serve the self-service API, to the self-service client `ID` of the same organisation (x5c, scopes idporten:dcr.read and idporten:dcr.write)", EnvVars: []string{"MP_HSM_EMULATE_ADMIN_CLIENT_ID"}},
			&cli.StringSliceFlag{Name: "consent", Usage: "a consent given in Altinn to the client's organisation, `ID:FROM` (UUID, then urn:altinn:person:identifier-no:<fnr> or urn:altinn:organization:identifier-no:<orgnr>); repeatable", EnvVars: []string{"MP_HSM_EMULATE_CONSENT"}},
			&cli.DurationFlag{Name: "latency", Usage: "add `DURATION` before every answer", EnvVars: []string{"MP_HSM_EMULATE_LATENCY"}},
		},
		Action: func(c *cli.Context) error { return e.emulate(c) },
	}
}

func (e *env) emulate(c *cli.Context) error {
	cfg := emulator.Config{TokenLifetime: c.Duration("token-lifetime"), Logf: func(f string, a ...any) { e.log.Info(fmt.Sprintf(f, a...)) }}
	for _, f := range c.StringSlice("root") {
		certs, err := readCertFile("--root", f)
		if err != nil {
			return err
		}
		cfg.Roots = append(cfg.Roots, certs...)
	}
	clients, consents, err := emulateClients(c)
	if err != nil {
		return err
	}
	cfg.Clients, cfg.Consents = clients, consents
	// The self-service client is a client of its own with both self-service
	// scopes, of --org-number or else of the other clients' one organisation.
	if admin, org := c.String("admin-client-id"), c.String("org-number"); admin != "" {
		for _, cl := range cfg.Clients {
			if cl.ID == admin {
				return usagef("--admin-client-id %q is also a client: the self-service client is a client of its own", admin)
			}
			if org == "" {
				org = cl.OrgNumber
			} else if cl.OrgNumber != org {
				return usagef("--admin-client-id %q: the clients are of several organisations; give its --org-number", admin)
			}
		}
		cfg.AdminClient = admin
		cfg.Clients = append(cfg.Clients, emulator.Client{ID: admin, OrgNumber: org, Scopes: []string{emulator.ScopeAdminRead, emulator.ScopeAdminWrite}})
	}
	srv := emulator.NewUnstartedServer(cfg)
	if err := srv.StartOn(c.String("listen")); err != nil {
		return usagef("--listen %s: %v", c.String("listen"), err)
	}
	defer srv.Close()
	if n := c.Int("fail-next"); n > 0 {
		srv.FailNext(n, c.Int("fail-status"))
	}
	if d := c.Duration("latency"); d > 0 {
		srv.SetLatency(d)
	}
	fmt.Fprintln(e.stdout, srv.MetadataURL())
	e.log.Info("emulator running", "issuer", srv.Issuer(), "token_endpoint", srv.TokenURL())
	if cfg.AdminClient != "" {
		fmt.Fprintln(e.stdout, srv.AdminAPIURL())
		e.log.Info("self-service API", "url", srv.AdminAPIURL(), "client_id", cfg.AdminClient)
	}
	if f, ok := e.stdout.(*os.File); ok {
		f.Sync()
	}
	<-c.Context.Done()
	return nil
}

// consentsFlag reads --consent ID:FROM values: consents given to org.
func consentsFlag(vals []string, org string) ([]emulator.Consent, error) {
	if len(vals) > 0 && org == "" {
		return nil, usagef("--consent needs --org-number: the organisation the consents were given to (a [[client]] table's consents take its org-number)")
	}
	var out []emulator.Consent
	for i, v := range vals {
		id, from, _ := strings.Cut(v, ":")
		gc := grant.Consent{ID: id, From: from}
		if err := gc.Validate(); err != nil || from == "" {
			if err == nil {
				err = errors.New("missing FROM")
			}
			// Not v itself, which may hold a person's number (written
			// FROM:ID): Validate's error quotes what was wrong, a from
			// masked.
			return nil, usagef("--consent (value %d of %d): want ID:FROM: %v", i+1, len(vals), err)
		}
		out = append(out, emulator.Consent{ID: id, From: from, To: org})
	}
	return out, nil
}

// emulateClients are the clients and consents of the flags and --config, checked.
func emulateClients(c *cli.Context) ([]emulator.Client, []emulator.Consent, error) {
	var keys map[string]crypto.PublicKey
	if f := c.String("jwks"); f != "" {
		var err error
		if keys, err = readJWKS(f); err != nil {
			return nil, nil, usagef("--jwks %s: %v", f, err)
		}
	}
	var clients []emulator.Client
	if len(c.StringSlice("client-id")) > 0 && c.String("org-number") == "" {
		return nil, nil, usagef("the emulator needs --client-id and --org-number for the clients it knows from flags (or --config with [[client]] tables)")
	}
	for _, id := range c.StringSlice("client-id") {
		cl := emulator.Client{ID: id, OrgNumber: c.String("org-number"), Scopes: c.StringSlice("scope"),
			DelegatedBy: c.StringSlice("delegated-by"), SystemUserOrgs: c.StringSlice("system-user-org"), Keys: keys}
		if err := checkEmulateClient(cl); err != nil {
			return nil, nil, usagef("--client-id %s: %v (flags: --org-number, --delegated-by, --system-user-org)", id, err)
		}
		clients = append(clients, cl)
	}
	consents, err := consentsFlag(c.StringSlice("consent"), c.String("org-number"))
	if err != nil {
		return nil, nil, err
	}
	if f := c.String("config"); f != "" {
		more, given, err := readEmulateFile(f)
		if err != nil {
			return nil, nil, err
		}
		clients, consents = append(clients, more...), append(consents, given...)
	}
	if len(clients) == 0 {
		return nil, nil, usagef("the emulator knows no client: give --client-id and --org-number, or --config with [[client]] tables")
	}
	seen := map[string]bool{}
	trusts := len(c.StringSlice("root")) > 0
	for _, cl := range clients {
		if seen[cl.ID] {
			return nil, nil, usagef("client %q is given twice (--client-id, --config)", cl.ID)
		}
		seen[cl.ID] = true
		trusts = trusts || len(cl.Keys) > 0
	}
	if !trusts {
		return nil, nil, usagef("the emulator trusts nothing: give --root (for x5c grants) or --jwks (for kid grants)")
	}
	return clients, consents, nil
}

// readJWKS reads a JWK set (or a single JWK) of public keys by admin's
// parser, keyed by kid (else the RFC 7638 thumbprint).
func readJWKS(path string) (map[string]crypto.PublicKey, error) {
	data, err := safefile.Read(path, safefile.MaxCertificates)
	if err != nil {
		return nil, err
	}
	keys, err := admin.ParseKeys(data)
	if err != nil {
		return nil, err
	}
	out := map[string]crypto.PublicKey{}
	for _, k := range keys {
		var j signer.JWK
		if err := json.Unmarshal(k.Raw, &j); err != nil {
			return nil, err
		}
		pub, err := j.PublicKey()
		if err != nil {
			return nil, err
		}
		kid := k.Kid
		if kid == "" {
			if kid, err = signer.Thumbprint(pub); err != nil {
				return nil, err
			}
		}
		out[kid] = pub
	}
	return out, nil
}

// emulateClient is one [[client]] table of an emulate --config file.
type emulateClient struct {
	ClientID      string   `toml:"client-id"`
	OrgNumber     string   `toml:"org-number"`
	Scopes        []string `toml:"scopes"`
	DelegatedBy   []string `toml:"delegated-by"`
	SystemUserOrg []string `toml:"system-user-org"`
	JWKS          string   `toml:"jwks"`
	Consents      []string `toml:"consents"`
}

// readEmulateFile reads an emulate --config file's clients and consents; a
// jwks path is relative to the file.
func readEmulateFile(path string) ([]emulator.Client, []emulator.Consent, error) {
	bad := func(format string, args ...any) ([]emulator.Client, []emulator.Consent, error) {
		return nil, nil, usagef("emulate --config %s: %s (see mp-hsm emulate --help)", path, fmt.Sprintf(format, args...))
	}
	data, err := safefile.Read(path, safefile.MaxCertificates)
	if err != nil {
		return nil, nil, usagef("emulate --config %v", err)
	}
	var f struct {
		Clients []emulateClient `toml:"client"`
	}
	md, err := decodeTOML(data, &f)
	if err != nil {
		return bad("%v", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		if len(k) > 1 && k[0] == "client" {
			return bad("[[client]]: unknown field %q (want client-id, org-number, scopes, delegated-by, system-user-org, jwks, consents)", k[len(k)-1])
		}
		return bad("unknown key %q (the file holds [[client]] tables only)", k.String())
	}
	if len(f.Clients) == 0 {
		return bad("no [[client]] table")
	}
	var out []emulator.Client
	var consents []emulator.Consent
	for i, fc := range f.Clients {
		c := emulator.Client{ID: fc.ClientID, OrgNumber: fc.OrgNumber, Scopes: fc.Scopes,
			DelegatedBy: fc.DelegatedBy, SystemUserOrgs: fc.SystemUserOrg}
		if fc.JWKS != "" {
			p := fc.JWKS
			if !filepath.IsAbs(p) {
				p = filepath.Join(filepath.Dir(path), p)
			}
			if c.Keys, err = readJWKS(p); err != nil {
				return bad("client %d (%q): jwks %s: %v", i+1, fc.ClientID, p, err)
			}
		}
		if err := checkEmulateClient(c); err != nil {
			return bad("client %d: %v", i+1, err)
		}
		given, err := consentsFlag(fc.Consents, fc.OrgNumber)
		if err != nil {
			return bad("client %d (%q): consents: %v", i+1, fc.ClientID, err)
		}
		out = append(out, c)
		consents = append(consents, given...)
	}
	return out, consents, nil
}

// checkEmulateClient checks a client from the flags or a config file alike.
func checkEmulateClient(c emulator.Client) error {
	if c.ID == "" {
		return errors.New("no client-id")
	}
	if c.OrgNumber == "" {
		return fmt.Errorf("client %q: no org-number", c.ID)
	}
	for _, f := range []struct {
		name string
		orgs []string
	}{{"org-number", []string{c.OrgNumber}}, {"delegated-by", c.DelegatedBy}, {"system-user-org", c.SystemUserOrgs}} {
		for _, o := range f.orgs {
			if len(o) != 9 || strings.Trim(o, "0123456789") != "" {
				return fmt.Errorf("client %q: %s %q: want 9 digits", c.ID, f.name, o)
			}
		}
	}
	return nil
}
