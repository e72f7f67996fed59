package main

import "github.com/urfave/cli/v2"

func listCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "show slots, tokens, keys and certificates",
		Description: "Lists the slots of the module with their tokens (label, serial, manufacturer, PIN flags),\n" +
			"the private keys (id, label, type, size, always-authenticate) and the certificates (subject,\n" +
			"org number, issuer, environment, valid until, days left); --slot, --token-label,\n" +
			"--token-serial or --key narrow it to one token. It logs in only when a PIN is given\n" +
			"(MP_HSM_PIN, --pin-file, or the --key URI's pin-source); without one it shows what the token\n" +
			"shows without login, which on most tokens leaves out the private keys, and says so.",
		Flags:  concat(keyFlags(), []cli.Flag{outputFlag("`FORMAT`: table or json", "table")}),
		Action: func(c *cli.Context) error { return e.list(c) },
	}
}
