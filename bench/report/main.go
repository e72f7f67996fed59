// Command report writes docs/BENCHMARKS.md from one run of make bench: the
// output of `go test -bench` (all packages, -count >= 5, -benchmem) and,
// if the daemon was measured, the JSON of bench/load, which it also draws
// as a PNG plot of latency percentiles against offered load; and, if the
// counting tests ran, the PKCS#11 call counts they wrote (-calls).
//
//	(cd bench && go run ./report -in ../bin/bench/bench.txt -load ../bin/bench/load.json \
//	    -calls ../bin/bench/calls.txt -out ../docs/BENCHMARKS.md -plot ../docs/bench-daemon-latency.png)
//
// Every figure is the median of its runs with the minimum and maximum
// beside it; every comparison is the ratio of two medians from the same
// run, shown with its target and whether the target was met. A figure that
// is not in the input is reported as not measured, never estimated.
//
// Lines of the input that start with "# " are notes scripts/bench.sh
// wrote: "# cmd: ..." the commands run, "# key: value" facts of the run.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	in := flag.String("in", "bin/bench/bench.txt", "output of go test -bench, with the notes of scripts/bench.sh")
	load := flag.String("load", "", "JSON of bench/load (optional)")
	out := flag.String("out", "docs/BENCHMARKS.md", "the report to write")
	plotFile := flag.String("plot", "docs/bench-daemon-latency.png", "the PNG plot to write, if -load has points")
	calls := flag.String("calls", "", "the PKCS#11 call counts the counting tests wrote (optional)")
	flag.Parse()
	if err := run(*in, *load, *calls, *out, *plotFile); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(in, loadFile, callsFile, out, plotFile string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := parse(f)
	if err != nil {
		return err
	}
	var ld *loadResult
	if loadFile != "" {
		if b, err := os.ReadFile(loadFile); err == nil {
			ld = new(loadResult)
			if err := json.Unmarshal(b, ld); err != nil {
				return fmt.Errorf("%s: %w", loadFile, err)
			}
		} else if !os.IsNotExist(err) {
			return err
		}
	}
	calls, err := readCalls(callsFile)
	if err != nil {
		return err
	}
	plotRel := ""
	if ld != nil && len(ld.Points) > 0 {
		if err := drawLoad(ld, plotFile); err != nil {
			return err
		}
		plotRel, _ = filepath.Rel(filepath.Dir(out), plotFile)
	}
	var b strings.Builder
	writeReport(&b, r, ld, calls, plotRel)
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

// key names one benchmark at one GOMAXPROCS.
