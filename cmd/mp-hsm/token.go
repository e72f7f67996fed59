package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/grant"
)

func tokenCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "token",
		Usage:     "get a Maskinporten access token and print it",
		UsageText: "mp-hsm token --slot 0 --client-id ID --scope SCOPE [--output token|json|header] [--altinn]",
		Description: "Signs a grant with the key on the token, sends it to Maskinporten and prints the access token\n" +
			"alone on stdout, so that $(mp-hsm token ...) works. --output json prints the token response\n" +
			"with expires_at; --output header prints 'Authorization: Bearer <token>'. --altinn exchanges\n" +
			"the Maskinporten token for an Altinn token and prints that instead.",
		Flags: slices.Concat(keyFlags(), mpFlags(), requestFlags(), []cli.Flag{
			outputFlag("`FORMAT`: token, json or header", "token"),
			&cli.BoolFlag{Category: catOut, Name: "altinn", Usage: "exchange the token for an Altinn token", EnvVars: []string{"MP_HSM_ALTINN"}},
		}),
		Action: func(c *cli.Context) error { return e.token(c) },
	}
}

func (e *env) token(c *cli.Context) error {
	out, err := outputFormat(c, "token", "json", "header")
	if err != nil {
		return err
	}
	return e.withGrantConfig(c, func(ctx context.Context, cfg *grant.Config, req grant.Request) error {
		if c.Bool("altinn") && cfg.Environment.AltinnExchange == "" {
			return usagef("--altinn: this environment has no Altinn exchange URL; give --altinn-exchange")
		}
		tok, err := cfg.Exchange(ctx, req)
		if err != nil {
			return err
		}
		e.log.Info("got a Maskinporten token", "token", tok)
		if c.Bool("altinn") {
			tok, err = cfg.AltinnToken(ctx, tok.AccessToken)
			if err != nil {
				return fmt.Errorf("the Altinn exchange: %w", err)
			}
		}
		switch out {
		case "json":
			return writeJSON(e.stdout, tokenJSON{
				AccessToken: tok.AccessToken, TokenType: tok.TokenType, ExpiresIn: tok.ExpiresIn,
				Scope: tok.Scope, ExpiresAt: tok.Expiry.UTC().Format(time.RFC3339),
			})
		case "header":
			_, err = fmt.Fprintf(e.stdout, "Authorization: Bearer %s\n", tok.AccessToken)
			return err
		}
		_, err = fmt.Fprintln(e.stdout, tok.AccessToken)
		return err
	})
}

func grantCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "grant",
		Usage:     "print a signed JWT grant without sending it",
		UsageText: "mp-hsm grant --slot 0 --client-id ID --scope SCOPE --env test",
		Description: "Signs a grant exactly as 'mp-hsm token' would and prints it on stdout; the grant is not\n" +
			"sent anywhere. A grant can be used once and lives --lifetime (default 60s). With --well-known\n" +
			"the metadata document is fetched to learn the issuer; with --env or --issuer nothing goes over\n" +
			"the network.",
		Flags:  slices.Concat(keyFlags(), mpFlags(), requestFlags()),
		Action: func(c *cli.Context) error { return e.grant(c) },
	}
}

func (e *env) grant(c *cli.Context) error {
	return e.withGrantConfig(c, func(ctx context.Context, cfg *grant.Config, req grant.Request) error {
		g, err := cfg.Grant(req)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(e.stdout, g)
		return err
	})
}

// withGrantConfig checks everything that needs no token (so bad input costs
// no PIN), opens the key, resolves Maskinporten within --timeout, and calls f.
func (e *env) withGrantConfig(c *cli.Context, f func(context.Context, *grant.Config, grant.Request) error) error {
	if err := preflight(c); err != nil {
		return err
	}
	req, err := requestFromFlags(c)
	if err != nil {
		return err
	}
	clientID := strings.TrimSpace(c.String("client-id"))
	if clientID == "" {
		return usagef("missing --client-id (or MP_HSM_CLIENT_ID or MASKINPORTEN_CLIENT_ID): the Maskinporten client the grant is for")
	}
	s, err := e.openSigner(c, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	e.warnAlwaysAuthenticate(s)
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	envr, how, err := e.resolveEnvironment(ctx, c, s.Chain())
	if err != nil {
		return timedOut(ctx, c, err)
	}
	e.log.Debug("Maskinporten environment", "issuer", envr.Issuer, "token_endpoint", envr.TokenEndpoint, "from", how)
	if c.String("kid") == "" && len(s.Chain()) == 0 {
		return withCode(exitToken, errors.New("the key has no certificate on the token, so no x5c can be sent: register the key (mp-hsm jwk) and give its --kid, or add the certificate"))
	}
	cfg := &grant.Config{ClientID: clientID, Signer: s, Algorithm: c.String("alg"), KeyID: c.String("kid"), Environment: envr,
		AllowInsecure: c.Bool("allow-insecure"), Logger: e.log}
	return timedOut(ctx, c, f(ctx, cfg, req))
}

// timedOut says that --timeout ended err, when it did.
func timedOut(ctx context.Context, c *cli.Context, err error) error {
	if err != nil && ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("%w\ngave up after --timeout %s; raise it if Maskinporten is slow", err, c.Duration("timeout"))
	}
	return err
}

// tokenJSON is Maskinporten's token response plus expires_at.
type tokenJSON struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope,omitempty"`
	ExpiresAt   string `json:"expires_at"`
}
