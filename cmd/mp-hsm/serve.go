package main

import "github.com/urfave/cli/v2"

func serveCommand(e *env) *cli.Command {
	return &cli.Command{Name: "serve", Usage: "run the token daemon (not yet written)", Hidden: true,
		Action: func(*cli.Context) error { return usagef("serve: not yet written") }}
}
