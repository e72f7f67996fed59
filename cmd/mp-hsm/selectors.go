package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// Within each group, a selector given on the command line (or in a serve
// --config file) replaces the group's selectors from the environment, so
// that a sourced MP_HSM_KEY_ID=01 does not narrow --key-label. Selectors of
// one origin must all match.
var selectorGroups = [][]string{
	{"key", "key-id", "key-label"},
	{"slot", "token-label", "token-serial"},
}

// selectors returns the selector flags' values by the rule above, and those
// from the environment as NAME=value.
func selectors(c *cli.Context) (vals map[string]string, fromEnv []string) {
	vals = map[string]string{}
	for _, group := range selectorGroups {
		env := map[string]string{}
		given := false
		for _, name := range group {
			v := c.String(name)
			if v == "" {
				continue
			}
			if variable := envOrigin(c, name, v); variable != "" {
				env[name] = variable
			} else {
				given = true
			}
			vals[name] = v
		}
		for _, name := range group {
			if env[name] == "" {
				continue
			}
			if given {
				delete(vals, name)
			} else {
				fromEnv = append(fromEnv, env[name]+"="+vals[name])
			}
		}
	}
	return vals, fromEnv
}

// envOrigin returns the variable that gave flag name its value v, or "".
func envOrigin(c *cli.Context, name, v string) string {
	for _, f := range c.Command.Flags {
		ef, ok := f.(interface{ GetEnvVars() []string })
		if !ok || f.Names()[0] != name {
			continue
		}
		for _, variable := range ef.GetEnvVars() {
			if x, ok := os.LookupEnv(variable); ok && strings.TrimSpace(x) == strings.TrimSpace(v) {
				return variable
			}
		}
	}
	return ""
}

// explainEnvSelectors adds the selectors from the environment to err.
func explainEnvSelectors(err error, fromEnv []string) error {
	if err == nil || len(fromEnv) == 0 {
		return err
	}
	return fmt.Errorf("%w\nfrom the environment: %s (a --key-id, --key-label or --key flag replaces the key's variables; --slot, --token-label or --token-serial the token's)",
		err, strings.Join(fromEnv, ", "))
}
