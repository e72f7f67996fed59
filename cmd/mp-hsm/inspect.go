package main

import "github.com/urfave/cli/v2"

func inspectCommand(e *env) *cli.Command {
	return &cli.Command{Name: "inspect", Usage: "decode a grant or access token (not yet written)", Hidden: true,
		Action: func(*cli.Context) error { return usagef("inspect: not yet written") }}
}
