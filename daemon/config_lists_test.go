package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

// TestConfigRefusesEmptyLists: a list option of Config that has elements
// but no entry once split at spaces and commas (what urfave/cli makes of
// "--allowed-scopes ,") is ErrConfig, naming the field, and no signer is
// opened; before, it read as "no list" and allowed every scope.
func TestConfigRefusesEmptyLists(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		set   func(*Config)
		field string
	}{
		{"scopes comma", func(c *Config) { c.AllowedScopes = []string{",", ""} }, "AllowedScopes"},
		{"scopes empty", func(c *Config) { c.AllowedScopes = []string{""} }, "AllowedScopes"},
		{"scopes spaces", func(c *Config) { c.AllowedScopes = []string{" ", " , "} }, "AllowedScopes"},
		{"resources comma", func(c *Config) { c.AllowedResources = []string{","} }, "AllowedResources"},
		{"resources empty", func(c *Config) { c.AllowedResources = []string{"", " "} }, "AllowedResources"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{
				OpenSigner: func(context.Context) (signer.Signer, error) {
					t.Error("OpenSigner called for an invalid Config")
					return nil, errors.New("no")
				},
				Grant: grant.Config{ClientID: "c"},
			}
			tc.set(&cfg)
			_, err := New(cfg)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.field+" is given but holds no entry") {
				t.Fatalf("New: %v, want ErrConfig naming %s", err, tc.field)
			}
		})
	}
}

// TestConfigResourceEntries: AllowedResources entries are absolute URIs,
// their beginnings with '*', or '*'; anything else is ErrConfig.
func TestConfigResourceEntries(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"https://api.example.no/x", "https://api.example.no/*", "urn:altinn:*", "*"} {
		if _, err := (Config{OpenSigner: nopOpen, Grant: grant.Config{ClientID: "c"}, AllowedResources: []string{v}}).withDefaults(); err != nil {
			t.Errorf("%q: %v", v, err)
		}
	}
	for _, v := range []string{"api.example.no/x", "https*", "https://a b/", "https://x/\"x\""} {
		_, err := (Config{OpenSigner: nopOpen, Grant: grant.Config{ClientID: "c"}, AllowedResources: []string{v}}).withDefaults()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "AllowedResources") {
			t.Errorf("%q: %v, want ErrConfig naming AllowedResources", v, err)
		}
	}
}

func nopOpen(context.Context) (signer.Signer, error) {
	return nil, errors.New("not opened in this test")
}

// TestEmptyListErrorNamesNoWiderDefault: the error for a list given empty
// does not tell the operator that leaving it out allows any value, which
// is false for authorization-types (left out: none) and AllowedHosts
// (left out: loopback names only). Before, every such error said so.
func TestEmptyListErrorNamesNoWiderDefault(t *testing.T) {
	t.Parallel()
	open := func(context.Context) (signer.Signer, error) { return nil, errors.New("no") }
	_, errTypes := resolveClients(Config{Clients: []Client{{Name: "a", Users: []string{"0"}, AuthorizationTypes: []string{","}}}})
	_, errHosts := Config{OpenSigner: open, Grant: grant.Config{ClientID: "c"}, AllowedHosts: []string{" , "}}.withDefaults()
	for name, err := range map[string]error{"authorization-types": errTypes, "AllowedHosts": errHosts} {
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), name+" is given but holds no entry") {
			t.Fatalf("%s: %v, want ErrConfig for a list with no entry", name, err)
		}
		if strings.Contains(err.Error(), "any value") {
			t.Errorf("%s: %v: leaving it out does not allow any value", name, err)
		}
	}
}
