package main

import "github.com/urfave/cli/v2"

func doctorCommand(e *env) *cli.Command {
	return &cli.Command{Name: "doctor", Usage: "check the setup (not yet written)", Hidden: true,
		Action: func(*cli.Context) error { return usagef("doctor: not yet written") }}
}
