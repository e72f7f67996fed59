package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEmulateConfigRepeatedKey: emulate --config refuses a key set twice,
// as serve --config does (repeatedKey). Before, the TOML library took the
// last of `scopes = ["a"]` then `scopes = []`, and the file meant another
// thing than it seemed to.
func TestEmulateConfigRepeatedKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	client := "[[client]]\nclient-id = \"a\"\norg-number = \"910000004\"\n"
	for _, tc := range []struct{ name, file, want string }{
		{"repeated list", client + "scopes = [\"x\"]\nscopes = []\n", "client.scopes is set twice"},
		{"repeated list in the second client", client + "consents = []\n" + strings.Replace(client, `"a"`, `"b"`, 1) + "delegated-by = [\"910000004\"]\ndelegated-by = []\n", "client.delegated-by is set twice"},
	} {
		conf := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
		if err := os.WriteFile(conf, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := readEmulateFile(conf)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
		if code := exitCode(err); err != nil && code != exitUsage {
			t.Errorf("%s: exit code %d, want %d", tc.name, code, exitUsage)
		}
	}
	ok := filepath.Join(dir, "ok.toml")
	if err := os.WriteFile(ok, []byte(client+"scopes = [\"x\"]\n"+strings.Replace(client, `"a"`, `"b"`, 1)+"scopes = [\"y\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if clients, _, err := readEmulateFile(ok); err != nil || len(clients) != 2 {
		t.Fatalf("a file that sets each key once per table: %d clients, %v", len(clients), err)
	}
}

// TestConsentFlagErrorHidesThePersonNumber: a --consent (or a config's
// consents) value written the wrong way round (FROM:ID) is refused without
// the person's number in clear. Before, the error showed the value with
// only its last part (the id) masked.
func TestConsentFlagErrorHidesThePersonNumber(t *testing.T) {
	t.Parallel()
	const fnr = "13097248022"
	for _, v := range []string{
		"urn:altinn:person:identifier-no:" + fnr + ":77ed8698-e619-4066-9eb4-5c1eb3f165a1",
		"77ed8698-e619-4066-9eb4-5c1eb3f165a1:urn:altinn:person:identifier-no:" + fnr + "x",
		fnr,
	} {
		_, err := consentsFlag([]string{v}, "910000004")
		if err == nil {
			t.Fatalf("%s: accepted", v)
		}
		if strings.Contains(err.Error(), fnr) {
			t.Errorf("the error shows the person's number: %v", err)
		}
		if exitCode(err) != exitUsage {
			t.Errorf("%v: exit code %d, want %d", err, exitCode(err), exitUsage)
		}
	}
}

// TestConsentFlagNeedsOrganisation: --consent without --org-number (the
// clients from --config only) is refused; before, the emulator knew a
// consent given to no organisation, which every consent token request
// then met as "given to organisation , not to ...".
func TestConsentFlagNeedsOrganisation(t *testing.T) {
	t.Parallel()
	_, err := consentsFlag([]string{"77ed8698-e619-4066-9eb4-5c1eb3f165a1:urn:altinn:organization:identifier-no:910000004"}, "")
	if err == nil || !strings.Contains(err.Error(), "--org-number") || exitCode(err) != exitUsage {
		t.Fatalf("consentsFlag without an organisation: %v, want a usage error naming --org-number", err)
	}
	if got, err := consentsFlag(nil, ""); err != nil || len(got) != 0 {
		t.Fatalf("no --consent: %v, %v", got, err)
	}
}
