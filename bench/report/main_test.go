package main

import (
	"strings"
	"testing"
)

const sample = `# date: 2026-01-01T00:00:00Z
# cmd: go test -bench .
goos: linux
pkg: github.com/mp-hsm/mp-hsm/signer/p11
cpu: Some CPU
BenchmarkRawCSign-2         	     766	    400 ns/op	     296 B/op	       4 allocs/op
BenchmarkRawCSign-2         	     766	    500 ns/op	     296 B/op	       4 allocs/op
BenchmarkRawCSign-2         	     766	    600 ns/op	     296 B/op	       4 allocs/op
BenchmarkSignerSign-2       	     778	    500 ns/op	     360 B/op	       5 allocs/op
BenchmarkSignerSignParallel 	     562	   1000 ns/op
BenchmarkSignerSignParallel-2	    1294	    500 ns/op
BenchmarkHeap-10000Keys     	       1	    100 ns/op	        16.5 heap-MiB
--- FAIL: BenchmarkBroken
FAIL	github.com/mp-hsm/mp-hsm/daemon	0.1s
`

func TestParse(t *testing.T) {
	r, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if r.notes["date"] != "2026-01-01T00:00:00Z" || len(r.cmds) != 1 || r.cpu != "Some CPU" {
		t.Errorf("notes %v, cmds %v, cpu %q", r.notes, r.cmds, r.cpu)
	}
	raw, ok := r.get("signer/p11", "RawCSign", 0, "ns/op")
	if !ok || raw.n != 3 || raw.median != 500 || raw.min != 400 || raw.max != 600 {
		t.Errorf("RawCSign: %+v %v", raw, ok)
	}
	if s, ok := r.get("signer/p11", "SignerSignParallel", 1, "ns/op"); !ok || s.median != 1000 {
		t.Errorf("SignerSignParallel at 1: %+v %v", s, ok)
	}
	if s, ok := r.get("signer/p11", "SignerSignParallel", 2, "ns/op"); !ok || s.median != 500 {
		t.Errorf("SignerSignParallel at 2: %+v %v", s, ok)
	}
	if s, ok := r.get("signer/p11", "Heap-10000Keys", 0, "heap-MiB"); !ok || s.median != 16.5 {
		t.Errorf("a -N suffix over 64 is part of the name: %+v %v", s, ok)
	}
	if len(r.problems) != 2 {
		t.Errorf("problems %q, want the failed benchmark and package", r.problems)
	}
}

func TestRowsWithoutDaemon(t *testing.T) {
	r, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	writeReport(&b, r, nil, nil, "")
	out := b.String()
	for _, want := range []string{"1.000 (raw time ÷ signer time)", "not measured: the daemon benchmarks do not exist yet", "TODO: not measured", "2.00× throughput", "| signed grant vs signature alone | - | - | - | < 5% added | not measured |"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestSummarise(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want stat
	}{
		{[]float64{3, 1, 2}, stat{3, 2, 1, 3}},
		{[]float64{4, 1, 2, 3}, stat{4, 2.5, 1, 4}},
		{nil, stat{}},
	} {
		if got := summarise(tc.in); got != tc.want {
			t.Errorf("summarise(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestCallsSection(t *testing.T) {
	calls, err := parseCalls(strings.NewReader(`token slots=2 total=32 minimum=26 bound=32 C_GetAttributeValue=10 C_GetTokenInfo=3
token slots=4 total=36 minimum=28 bound=35 C_GetAttributeValue=12
grant key=always-authenticate-key grants=20 total=80 C_Sign=40 C_Login=20 C_SignInit=20
`))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	writeCalls(&b, calls)
	out := b.String()
	for _, want := range []string{
		"| 2 slots, 3 certificates | 32 | 26 | ≤ 32 | met | C_GetAttributeValue=10 C_GetTokenInfo=3 |",
		"| 4 slots, 3 certificates | 36 | 28 | ≤ 35 | **missed** |",
		"| always authenticate key | 20 | 80 | 4.00 | C_Sign=40 C_Login=20 C_SignInit=20 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("calls section lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	writeCalls(&b, nil)
	if !strings.Contains(b.String(), "TODO: not measured") {
		t.Errorf("without a calls file: %s", b.String())
	}
	if _, err := parseCalls(strings.NewReader("token total\n")); err == nil {
		t.Error("a field without = was accepted")
	}
}
