package main

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

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
			"grants and the JWKs in --jwks for kid grants, knows one client (--client-id, --org-number,\n" +
			"--scope), and enforces Maskinporten's rules. It prints its metadata URL on stdout; use it as\n" +
			"--well-known. --fail-next and --latency inject faults for testing clients. With --admin-client-id\n" +
			"it also serves Digdir's self-service API for the client's keys at <URL>/api/v1/ (see mp-hsm admin).\n" +
			"--consent ID:FROM makes it know a consent given in Altinn to the client's organisation, for\n" +
			"consent tokens (grants with authorization_details of type urn:altinn:consent).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:0", Usage: "`HOST:PORT` to listen on (port 0: any free port)", EnvVars: []string{"MP_HSM_EMULATE_LISTEN"}},
			&cli.StringSliceFlag{Name: "root", Usage: "PEM `FILE` of trusted root certificates for x5c (repeatable)", EnvVars: []string{"MP_HSM_EMULATE_ROOT"}},
			&cli.StringFlag{Name: "jwks", Usage: "JWK set `FILE` of keys registered on the client, for kid grants", EnvVars: []string{"MP_HSM_EMULATE_JWKS"}},
			&cli.StringFlag{Name: "client-id", Usage: "the client `ID` the emulator knows", EnvVars: []string{"MP_HSM_CLIENT_ID", "MASKINPORTEN_CLIENT_ID"}},
			&cli.StringFlag{Name: "org-number", Usage: "the client's organisation number `ORGNR` (must match the certificate)", EnvVars: []string{"MP_HSM_EMULATE_ORG_NUMBER"}},
			&cli.StringSliceFlag{Name: "scope", Usage: "`SCOPE` the client may ask for (repeatable)", EnvVars: []string{"MP_HSM_EMULATE_SCOPE"}},
			&cli.StringSliceFlag{Name: "delegated-by", Usage: "`ORGNR` that delegated to the client (allowed consumer_org)", EnvVars: []string{"MP_HSM_EMULATE_DELEGATED_BY"}},
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
	clientID, org := c.String("client-id"), c.String("org-number")
	if clientID == "" || org == "" {
		return usagef("the emulator needs --client-id and --org-number for the client it knows")
	}
	if len(org) != 9 || strings.Trim(org, "0123456789") != "" {
		return usagef("--org-number %q: want 9 digits", org)
	}
	cfg := emulator.Config{TokenLifetime: c.Duration("token-lifetime"), Logf: func(f string, a ...any) { e.log.Info(fmt.Sprintf(f, a...)) }}
	for _, f := range c.StringSlice("root") {
		data, err := safefile.Read(f, safefile.MaxCertificates)
		if err != nil {
			return usagef("--root %v", err)
		}
		certs, err := signer.ReadCertificates(data)
		if err != nil {
			return usagef("--root %s: %v", f, err)
		}
		cfg.Roots = append(cfg.Roots, certs...)
	}
	var err error
	client := emulator.Client{ID: clientID, OrgNumber: org, Scopes: c.StringSlice("scope"), DelegatedBy: c.StringSlice("delegated-by")}
	if f := c.String("jwks"); f != "" {
		keys, err := readJWKS(f)
		if err != nil {
			return usagef("--jwks %s: %v", f, err)
		}
		client.Keys = keys
	}
	if len(cfg.Roots) == 0 && len(client.Keys) == 0 {
		return usagef("the emulator trusts nothing: give --root (for x5c grants) or --jwks (for kid grants)")
	}
	cfg.Clients = []emulator.Client{client}
	if cfg.Consents, err = consentsFlag(c.StringSlice("consent"), org); err != nil {
		return err
	}
	if admin := c.String("admin-client-id"); admin != "" {
		if admin == clientID {
			return usagef("--admin-client-id %q is --client-id: the self-service client is a client of its own", admin)
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
	if f, ok := e.stdout.(*os.File); ok {
		f.Sync()
	}
	e.log.Info("emulator running", "issuer", srv.Issuer(), "token_endpoint", srv.TokenURL())
	if cfg.AdminClient != "" {
		e.log.Info("self-service API", "url", srv.AdminAPIURL(), "client_id", cfg.AdminClient)
	}
	<-c.Context.Done()
	return nil
}

// consentsFlag reads --consent ID:FROM values: consents given to org, valid
// for a year from now.
func consentsFlag(vals []string, org string) ([]emulator.Consent, error) {
	var out []emulator.Consent
	for _, v := range vals {
		id, from, _ := strings.Cut(v, ":")
		gc := grant.Consent{ID: id, From: from}
		if err := gc.Validate(); err != nil || from == "" {
			if err == nil {
				err = errors.New("missing FROM")
			}
			return nil, usagef("--consent %s: want ID:FROM: %v", grant.MaskParty(v), err)
		}
		out = append(out, emulator.Consent{ID: id, From: from, To: org})
	}
	return out, nil
}

// readJWKS reads a JWK set (or a single JWK) of public keys, keyed by kid.
func readJWKS(path string) (map[string]crypto.PublicKey, error) {
	data, err := safefile.Read(path, safefile.MaxCertificates)
	if err != nil {
		return nil, err
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	raws := set.Keys
	if len(raws) == 0 {
		raws = []json.RawMessage{data}
	}
	out := map[string]crypto.PublicKey{}
	for _, raw := range raws {
		var j signer.JWK
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, err
		}
		pub, err := j.PublicKey()
		if err != nil {
			return nil, err
		}
		kid := j.Kid
		if kid == "" {
			if kid, err = signer.Thumbprint(pub); err != nil {
				return nil, err
			}
		}
		out[kid] = pub
	}
	return out, nil
}
