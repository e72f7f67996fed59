package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/internal/conformance"
)

func TestRender(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "compat.jsonl")
	rec, err := conformance.NewRecorder(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range []conformance.Result{
		{Backend: "opencryptoki", Version: "opencryptoki 3.8.1", Feature: "start", Result: conformance.OK,
			Notes: []string{"Compiled-in paths: one token per machine."}},
		{Backend: "opencryptoki", Version: "opencryptoki 3.8.1", Feature: "ES256", Result: conformance.Unsupported,
			Note: "C_GetMechanismList has no CKM_ECDSA"},
		{Backend: "softhsm2", Version: "softhsm2 2.6.1", Feature: "start", Result: conformance.OK},
		{Backend: "softhsm2", Version: "softhsm2 2.6.1", Feature: "ES256", Result: conformance.OK},
		{Backend: "softhsm2", Version: "softhsm2 2.6.1", Feature: "chain", Result: conformance.Failed, Note: "a | b"},
		{Backend: "tpm2-pkcs11", Feature: "start", Result: conformance.Failed, Note: "swtpm did not start"},
	} {
		if err := rec.Record(res); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "COMPATIBILITY.md")
	if err := run(in, out); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, want := range []string{
		"| feature | softhsm2 | tpm2-pkcs11 | opencryptoki |", // the fixed order, not the file's
		"| ES256: ES256 signature (CKM_ECDSA, P-256 key generated on the token) | ok | – | not supported |",
		"| chain: the certificate chain read from the token | **FAILED** | – | – |",
		"| tpm2-pkcs11 | (did not start) |",
		"- Compiled-in paths: one token per machine.",
		"- ES256 (not supported by this token): C_GetMechanismList has no CKM_ECDSA",
		"- chain (failed): a \\| b",
		"- start (failed): swtpm did not start",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("the report lacks %q:\n%s", want, doc)
		}
	}
}

func TestRunRefusesEmptyResults(t *testing.T) {
	in := filepath.Join(t.TempDir(), "empty.jsonl")
	if err := os.WriteFile(in, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(in, filepath.Join(t.TempDir(), "out.md"))
	if err == nil || !strings.Contains(err.Error(), "holds no results") {
		t.Fatalf("run on an empty file: %v, want an error saying it holds no results", err)
	}
	if err := os.WriteFile(in, []byte(`{"backend":"x"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run(in, filepath.Join(t.TempDir(), "out.md")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("run on a line without feature: %v, want an error naming line 1", err)
	}
}
