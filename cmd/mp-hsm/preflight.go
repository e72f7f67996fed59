package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

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
	iss, te, x := c.String("issuer"), c.String("token-endpoint"), c.String("altinn-exchange")
	insecure := c.Bool("allow-insecure")
	if iss != "" && te != "" {
		if err := (grant.Environment{Issuer: iss, TokenEndpoint: te, AltinnExchange: x}).Validate(insecure); err != nil {
			return usageErr(err)
		}
	} else if x != "" {
		probe := grant.Environment{Issuer: "https://preflight.invalid/", TokenEndpoint: "https://preflight.invalid/token", AltinnExchange: x}
		if err := probe.Validate(insecure); err != nil {
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
