// Command compatreport writes docs/COMPATIBILITY.md from one run of the
// conformance suite (internal/conformance): the JSON lines the suite wrote
// to MP_HSM_COMPAT_OUT.
//
//	go run ./internal/conformance/compatreport -in dist/compat.jsonl -out dist/COMPATIBILITY.md
//
// It shows each backend with its package versions, a table of every
// feature on every backend (ok, not supported by the token, failed, or
// not run), the notes the suite recorded per feature, and what users of
// each backend must know. It says only what the results file holds.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/mp-hsm/mp-hsm/internal/conformance"
)

func main() {
	in := flag.String("in", "dist/compat.jsonl", "the results of the conformance suite (MP_HSM_COMPAT_OUT)")
	out := flag.String("out", "docs/COMPATIBILITY.md", "the report to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "compatreport:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	results, err := conformance.ReadResults(f)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if len(results) == 0 {
		return fmt.Errorf("%s holds no results: did the conformance suite run with MP_HSM_COMPAT_OUT set?", in)
	}
	return os.WriteFile(out, []byte(render(results)), 0o644)
}
