package main

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

// resolveEnvironment chooses the environment from --env, --well-known, or
// --issuer with --token-endpoint, else from the certificate's issuing CA.
func (e *env) resolveEnvironment(ctx context.Context, c *cli.Context, chain []*x509.Certificate) (grant.Environment, string, error) {
	name, wk, iss, te := c.String("env"), c.String("well-known"), c.String("issuer"), c.String("token-endpoint")
	if (name != "") && (wk != "") || (name != "" || wk != "") && (iss != "" || te != "") {
		// Name what the serve --config file set: a flag replaces only the same option.
		sf := cmp.Or(e.serveFile, &serveFile{})
		var set []string
		for _, n := range []string{"env", "well-known", "issuer", "token-endpoint"} {
			if v, ok := sf.values[n]; ok && v != "" {
				set = append(set, n)
			}
		}
		how := ""
		if len(set) > 0 {
			how = fmt.Sprintf(" (%s from config %s: a flag or variable replaces only the same option)", strings.Join(set, ", "), sf.path)
		}
		return grant.Environment{}, "", usagef("choose Maskinporten one way: --env, --well-known, or --issuer with --token-endpoint%s", how)
	}
	var envr grant.Environment
	var how string
	var err error
	switch {
	case name != "":
		envr, err = grant.EnvironmentByName(name)
		if err != nil {
			return envr, "", usagef("--env %q: use test or prod", name)
		}
		how = "--env " + envr.Name
	case wk != "":
		envr, err = grant.Discover(ctx, nil, wk, false)
		if err != nil {
			err = fmt.Errorf("--well-known %s: %w", wk, err)
			if errors.Is(err, grant.ErrRefused) {
				// A 4xx for a public document: the URL is wrong.
				hint := "check the metadata URL"
				if !strings.Contains(wk, "/.well-known/") {
					hint += ": --well-known is the metadata document's URL, which ends in /.well-known/oauth-authorization-server " +
						"(as mp-hsm emulate prints it), not the server's base URL"
				}
				return envr, "", usageErr(fmt.Errorf("%w; %s", err, hint))
			}
			return envr, "", err
		}
		how = "metadata " + wk
	case iss != "" || te != "":
		if iss == "" || te == "" {
			return envr, "", usagef("--issuer and --token-endpoint go together")
		}
		envr = grant.Environment{Issuer: iss, TokenEndpoint: te}
		how = "--issuer"
	default:
		if len(chain) == 0 {
			return envr, "", usagef("no certificate to tell the environment from: give --env test or --env prod (or --well-known)")
		}
		if envr, err = grant.EnvironmentForCertificate(chain[0]); err != nil {
			return envr, "", usagef("cannot tell the environment from the certificate's issuer %q: give --env test or --env prod", chain[0].Issuer.CommonName)
		}
		how = "certificate issued by " + chain[0].Issuer.CommonName
	}
	if x := c.String("altinn-exchange"); x != "" {
		envr.AltinnExchange = x
	}
	return envr, how, grant.CheckEnvironment(envr, chain)
}

// requestFromFlags builds the grant.Request from the request flags.
func requestFromFlags(c *cli.Context) (grant.Request, error) {
	req := grant.Request{
		Scopes:        c.StringSlice("scope"),
		Resources:     c.StringSlice("resource"),
		ConsumerOrg:   c.String("consumer-org"),
		OnBehalfOf:    c.String("on-behalf-of"),
		PID:           c.String("pid"),
		SystemUserOrg: c.String("system-user-org"),
		Consent:       grant.Consent{ID: c.String("consent-id"), From: c.String("consent-from")},
		Lifetime:      c.Duration("lifetime"),
	}
	if ad := c.String("authorization-details"); ad != "" {
		req.AuthorizationDetails = json.RawMessage(ad)
	}
	if len(req.Scopes) == 0 {
		return req, usagef("missing --scope (or MP_HSM_SCOPE): the scopes to ask Maskinporten for")
	}
	if c.IsSet("lifetime") && (req.Lifetime < grant.MinLifetime || req.Lifetime > grant.MaxLifetime) {
		return req, usagef("--lifetime %s: the grant lifetime must be from %ds to %ds", req.Lifetime,
			grant.MinLifetime/time.Second, grant.MaxLifetime/time.Second)
	}
	if err := req.Validate(); err != nil {
		var ve *grant.ValidationError
		if errors.As(err, &ve) { // name the flag that sets the claim
			flag := map[string]string{"iss_onbehalfof": "on-behalf-of", "systemuser_org": "system-user-org"}[ve.Field]
			if flag == "" {
				flag = strings.ReplaceAll(ve.Field, "_", "-")
			}
			return req, fmt.Errorf("--%s: %w", flag, err)
		}
		return req, err
	}
	return req, nil
}

// preflight checks the Maskinporten flags that need no token, so that a typo
// exits 2 before the module is opened and never costs a PIN try.
func preflight(c *cli.Context) error {
	if id := c.String("client-id"); id != "" && !grant.ValidScope(id) {
		return usagef("--client-id %q: a Maskinporten client id is printable ASCII without spaces", id)
	}
	if name := c.String("env"); name != "" {
		if _, err := grant.EnvironmentByName(name); err != nil {
			return usagef("--env %q: use test or prod", name)
		}
	}
	if alg := c.String("alg"); alg != "" {
		if _, err := signer.Method(alg); err != nil {
			return usageErr(fmt.Errorf("--alg: %w", err))
		}
	}
	if c.IsSet("timeout") && c.Duration("timeout") <= 0 {
		return usagef("--timeout %s: give how long to wait for Maskinporten, such as 30s", c.Duration("timeout"))
	}
	if c.IsSet("lifetime") {
		if l := c.Duration("lifetime"); l%time.Second != 0 {
			return usagef("--lifetime %s: a grant's lifetime is whole seconds (exp and iat are in seconds), such as %s",
				l, l.Truncate(time.Second))
		}
	}
	// The endpoints given, with stand-ins for the pair when only the exchange is.
	iss, te, x, insecure := c.String("issuer"), c.String("token-endpoint"), c.String("altinn-exchange"), c.Bool("allow-insecure")
	if iss != "" && te != "" || x != "" {
		if iss == "" || te == "" {
			iss, te = "https://preflight.invalid/", "https://preflight.invalid/token"
		}
		if err := (grant.Environment{Issuer: iss, TokenEndpoint: te, AltinnExchange: x}).Validate(insecure); err != nil {
			return usageErr(err)
		}
	}
	if wk := c.String("well-known"); wk != "" {
		probe := grant.Environment{Issuer: wk, TokenEndpoint: wk}
		if err := probe.Validate(insecure); err != nil {
			return usageErr(fmt.Errorf("--well-known: %w", err))
		}
	}
	return nil
}
