package main

import (
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/inspect"
)

func inspectCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "decode a grant or an access token (decodes only: verifies nothing)",
		UsageText: "mp-hsm token ... | mp-hsm inspect [--output text|json] [--now TIME] [JWT|-]",
		ArgsUsage: "[JWT|-]",
		Description: "Decodes a JWT, such as a grant from 'mp-hsm grant' or an access token from 'mp-hsm token',\n" +
			"read from the argument or, with - or no argument, from stdin: its header, its claims, the\n" +
			"times iat, nbf and exp as dates with how long ago or how soon, the certificates in x5c\n" +
			"(subject, organisation number, issuer, validity, environment) and, for an access token,\n" +
			"client_id, scope and consumer; authorization_details element by element (a consent's id,\n" +
			"from, to, validity and rights; a person's number masked). stdin may also hold\n" +
			"'Authorization: Bearer <token>' or the JSON of 'mp-hsm token --output json'. Prefer stdin: an argument is visible to other users.\n\n" +
			"It only decodes: neither the signature nor the claims are verified, so what it shows may\n" +
			"be forged. Nothing is sent anywhere. --output json prints a stable JSON object.",
		Flags: []cli.Flag{
			textOutputFlag(),
			&cli.StringFlag{Category: catOut, Name: "now", Usage: "judge the times against `TIME` (RFC 3339) instead of the clock"},
			&cli.BoolFlag{Category: catOut, Name: "show-personal-data", Aliases: []string{"show-pid"}, Usage: "show personal identification numbers in full: a pid claim and a consent's from (default: only their first six digits, as in mp-hsm's logs)"},
		},
		Action: func(c *cli.Context) error { return e.inspect(c) },
	}
}

// maxInspectInput bounds what inspect reads from stdin.
const maxInspectInput = 1 << 20

func (e *env) inspect(c *cli.Context) error {
	out, err := outputFormat(c, "text", "json")
	if err != nil {
		return err
	}
	opts := inspect.Options{Now: time.Now(), ShowPID: c.Bool("show-personal-data")}
	if s := c.String("now"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return usagef("--now %q: want an RFC 3339 time such as 2025-01-31T12:00:00Z", s)
		}
		opts.Now = t
	}
	input := c.Args().First()
	if c.NArg() > 1 {
		return usagef("inspect takes one JWT (or - for stdin), not %d arguments", c.NArg())
	}
	if c.NArg() == 0 || input == "-" {
		if isTerminal(e.stdin) {
			fmt.Fprintln(e.stderr, "mp-hsm inspect: paste the JWT, then press Ctrl-D")
		}
		data, err := io.ReadAll(io.LimitReader(e.stdin, maxInspectInput+1))
		if err != nil {
			return fmt.Errorf("reading stdin: %w", err)
		}
		if len(data) > maxInspectInput {
			return usagef("the input on stdin is larger than 1 MiB: not a JWT")
		}
		input = string(data)
	}
	rep, err := inspect.Inspect(input, opts)
	if err != nil {
		return usageErr(err)
	}
	if !c.Bool("quiet") {
		fmt.Fprintln(e.stderr, "mp-hsm inspect: decoded only; nothing is verified (not the signature, the issuer nor the times)")
	}
	if out == "json" {
		return writeJSON(e.stdout, rep)
	}
	return rep.WriteText(e.stdout)
}
