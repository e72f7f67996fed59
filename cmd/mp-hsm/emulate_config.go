package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
)

// An emulate --config file is TOML with [[client]] tables, one per client
// the emulator knows, each with its own organisation, scopes, delegations,
// system users and registered keys. It is decoded into the tagged structs
// below and refused whole if it holds a key they do not name or sets one
// twice (repeatedKey, as serve --config).

// emulateFile is a parsed emulate --config file.
type emulateFile struct {
	Clients []emulateClient `toml:"client"`
}

// emulateClient is one [[client]] table of an emulate --config file.
type emulateClient struct {
	ClientID      string   `toml:"client-id"`
	OrgNumber     string   `toml:"org-number"`
	Scopes        []string `toml:"scopes"`
	DelegatedBy   []string `toml:"delegated-by"`
	SystemUserOrg []string `toml:"system-user-org"`
	JWKS          string   `toml:"jwks"`
	Consents      []string `toml:"consents"`
}

// emulateClientFields are the field names of a [[client]] table, for the
// error about an unknown one.
const emulateClientFields = "client-id, org-number, scopes, delegated-by, system-user-org, jwks, consents"

// readEmulateFile reads an emulate --config file into clients and the
// consents given to their organisations ("ID:FROM", as --consent). A jwks
// path is taken relative to the file's directory.
func readEmulateFile(path string) ([]emulator.Client, []emulator.Consent, error) {
	bad := func(format string, args ...any) ([]emulator.Client, []emulator.Consent, error) {
		return nil, nil, usagef("emulate --config %s: %s (see mp-hsm emulate --help)", path, fmt.Sprintf(format, args...))
	}
	data, err := safefile.Read(path, safefile.MaxCertificates)
	if err != nil {
		return nil, nil, usagef("emulate --config %v", err)
	}
	var f emulateFile
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return bad("line %d: %s", pe.Position.Line, pe.Message)
		}
		return bad("%v", err)
	}
	if err := repeatedKey(md); err != nil {
		return bad("%v", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		if len(k) > 1 && k[0] == "client" {
			return bad("[[client]]: unknown field %q (want %s)", k[len(k)-1], emulateClientFields)
		}
		return bad("unknown key %q (the file holds [[client]] tables only)", k.String())
	}
	if len(f.Clients) == 0 {
		return bad("no [[client]] table")
	}
	var out []emulator.Client
	var consents []emulator.Consent
	for i, fc := range f.Clients {
		c := emulator.Client{ID: fc.ClientID, OrgNumber: fc.OrgNumber, Scopes: fc.Scopes,
			DelegatedBy: fc.DelegatedBy, SystemUserOrgs: fc.SystemUserOrg}
		if fc.JWKS != "" {
			p := fc.JWKS
			if !filepath.IsAbs(p) {
				p = filepath.Join(filepath.Dir(path), p)
			}
			if c.Keys, err = readJWKS(p); err != nil {
				return bad("client %d (%q): jwks %s: %v", i+1, fc.ClientID, p, err)
			}
		}
		if err := checkEmulateClient(c); err != nil {
			return bad("client %d: %v", i+1, err)
		}
		given, err := consentsFlag(fc.Consents, fc.OrgNumber)
		if err != nil {
			return bad("client %d (%q): consents: %v", i+1, fc.ClientID, err)
		}
		out = append(out, c)
		consents = append(consents, given...)
	}
	return out, consents, nil
}

// checkEmulateClient checks what the emulator needs of a client, from the
// flags or a config file alike.
func checkEmulateClient(c emulator.Client) error {
	if c.ID == "" {
		return errors.New("no client-id")
	}
	if err := checkOrgNumber("org-number", c.OrgNumber); err != nil {
		return fmt.Errorf("client %q: %w", c.ID, err)
	}
	for _, o := range c.DelegatedBy {
		if err := checkOrgNumber("delegated-by", o); err != nil {
			return fmt.Errorf("client %q: %w", c.ID, err)
		}
	}
	for _, o := range c.SystemUserOrgs {
		if err := checkOrgNumber("system-user-org", o); err != nil {
			return fmt.Errorf("client %q: %w", c.ID, err)
		}
	}
	return nil
}

// checkOrgNumber says whether org, given as name, is 9 digits.
func checkOrgNumber(name, org string) error {
	if org == "" {
		return fmt.Errorf("no %s", name)
	}
	if len(org) != 9 || strings.Trim(org, "0123456789") != "" {
		return fmt.Errorf("%s %q: want 9 digits", name, org)
	}
	return nil
}
