package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/internal/manpage"
)

// manPagesCommand writes the man pages from the commands' own help; hidden,
// for scripts/deb.sh.
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
