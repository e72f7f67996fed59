package main

import (
	"encoding/hex"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/daemon"
)

// daemonClients builds the daemon's clients from the --config file's
// [[client]] tables: each client's secret file read, and an opener for a
// client's own key (key-id, key-label) on the daemon's token.
func (e *env) daemonClients(c *cli.Context) ([]daemon.Client, error) {
	if !e.hasClients() {
		return nil, nil
	}
	path := e.serveFile.path
	for _, name := range []string{"client-id", "client-secret-file", "allowed-scopes"} {
		if name != "allowed-scopes" && c.IsSet(name) {
			return nil, usagef("config %s has [[client]] tables, and --%s is given too (flag, variable or file): give each client's client-id and secret-file in its table", path, name)
		}
	}
	out := make([]daemon.Client, 0, len(e.serveFile.clients))
	for _, cs := range e.serveFile.clients {
		dc := daemon.Client{Name: cs.Name, ClientID: strings.TrimSpace(cs.ClientID), Scopes: cs.Scopes, AuthorizationTypes: cs.AuthzTypes,
			Users: cs.Users, Groups: cs.Groups, KeyID: cs.KID}
		if cs.SecretFile != "" {
			secret, err := e.readSecret(cs.SecretFile, "config "+path+": client \""+cs.Name+"\": secret-file")
			if err != nil {
				return nil, err
			}
			dc.Secret = secret
		}
		if cs.KeyID != "" || cs.KeyLabel != "" {
			var id []byte
			if cs.KeyID != "" {
				var err error
				id, err = hex.DecodeString(strings.TrimSpace(cs.KeyID))
				if err != nil || len(id) == 0 {
					return nil, usagef("config %s: client %q: key-id %q: want the CKA_ID in hex, such as 01 or 0a1b (see mp-hsm list)", path, cs.Name, cs.KeyID)
				}
			}
			if c.String("p12") != "" {
				return nil, usagef("config %s: client %q: key-id and key-label choose another key on the token; with --p12 there is none", path, cs.Name)
			}
			open, err := e.clientKeyOpener(c, id, cs.KeyLabel)
			if err != nil {
				return nil, err
			}
			dc.OpenKey = open
		}
		out = append(out, dc)
	}
	if err := daemon.CheckClients(out); err != nil {
		return nil, usagef("config %s: %v", path, err)
	}
	return out, nil
}

// clientWithSecret reports whether a [[client]] table has a secret-file,
// so that callers on TCP can use it.
func (e *env) clientWithSecret() bool {
	if !e.hasClients() {
		return false
	}
	for _, cs := range e.serveFile.clients {
		if cs.SecretFile != "" {
			return true
		}
	}
	return false
}
