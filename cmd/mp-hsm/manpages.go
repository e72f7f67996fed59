package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/internal/manpage"
)

// manPagesCommand writes the man pages (mp-hsm.1, mp-hsm-token.1, ...)
// made from this application's own commands and flags, so they say what
// --help says. Hidden: the Debian package build (scripts/deb.sh) runs it.
func manPagesCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "man-pages",
		Usage:     "write the man pages into DIR",
		ArgsUsage: "DIR",
		Hidden:    true,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("man-pages: give the one directory to write the pages into")
			}
			names, err := manpage.Write(c.App, c.Args().First())
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Fprintln(e.stdout, n)
			}
			return nil
		},
	}
}
