// Command report writes docs/BENCHMARKS.md from one run of make bench: the
// output of `go test -bench` (all packages, -count >= 5, -benchmem) and,
// if the daemon was measured, the JSON of bench/load, which it also draws
// as a PNG plot of latency percentiles against offered load.
//
//	go run ./bench/report -in bin/bench/bench.txt -load bin/bench/load.json \
//	    -out docs/BENCHMARKS.md -plot docs/bench-daemon-latency.png
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
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

func main() {
	in := flag.String("in", "bin/bench/bench.txt", "output of go test -bench, with the notes of scripts/bench.sh")
	load := flag.String("load", "", "JSON of bench/load (optional)")
	out := flag.String("out", "docs/BENCHMARKS.md", "the report to write")
	plotFile := flag.String("plot", "docs/bench-daemon-latency.png", "the PNG plot to write, if -load has points")
	flag.Parse()
	if err := run(*in, *load, *out, *plotFile); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(in, loadFile, out, plotFile string) error {
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
	plotRel := ""
	if ld != nil && len(ld.Points) > 0 {
		if err := drawLoad(ld, plotFile); err != nil {
			return err
		}
		plotRel, _ = filepath.Rel(filepath.Dir(out), plotFile)
	}
	var b strings.Builder
	writeReport(&b, r, ld, plotRel)
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

// key names one benchmark at one GOMAXPROCS.
type key struct {
	pkg, name string
	procs     int
}

// results is a parsed run.
type results struct {
	order    []key
	samples  map[key]map[string][]float64 // unit -> one value per count
	notes    map[string]string            // "# key: value" lines
	cmds     []string
	cpu      string
	problems []string // failed or skipped benchmarks and packages
}

var (
	benchLine = regexp.MustCompile(`^Benchmark(\S+)\s+(\d+)\s+(.+)$`)
	procsRE   = regexp.MustCompile(`^(.*)-(\d+)$`)
)

// parse reads go test -bench output. A name's -N suffix is GOMAXPROCS,
// which go test leaves out when it is 1; a suffix above 64 is taken as part
// of the name.
func parse(rd io.Reader) (*results, error) {
	r := &results{samples: map[key]map[string][]float64{}, notes: map[string]string{}}
	pkg := ""
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# cmd: "):
			r.cmds = append(r.cmds, strings.TrimPrefix(line, "# cmd: "))
		case strings.HasPrefix(line, "# "):
			if k, v, ok := strings.Cut(strings.TrimPrefix(line, "# "), ": "); ok {
				r.notes[k] = v
			}
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(line, "pkg: ")
		case strings.HasPrefix(line, "cpu: "):
			r.cpu = strings.TrimPrefix(line, "cpu: ")
		case strings.HasPrefix(line, "--- FAIL: Benchmark"), strings.HasPrefix(line, "--- SKIP: Benchmark"):
			r.problems = append(r.problems, strings.TrimSpace(strings.TrimPrefix(line, "--- ")))
		case strings.HasPrefix(line, "FAIL\t"), strings.HasPrefix(line, "# build failed"):
			r.problems = append(r.problems, line)
		default:
			m := benchLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			name, procs := m[1], 1
			if pm := procsRE.FindStringSubmatch(name); pm != nil {
				if n, _ := strconv.Atoi(pm[2]); n >= 1 && n <= 64 {
					name, procs = pm[1], n
				}
			}
			k := key{pkg, name, procs}
			if r.samples[k] == nil {
				r.samples[k] = map[string][]float64{}
				r.order = append(r.order, k)
			}
			f := strings.Fields(m[3])
			for i := 0; i+1 < len(f); i += 2 {
				v, err := strconv.ParseFloat(f[i], 64)
				if err != nil {
					return nil, fmt.Errorf("%q: %v", line, err)
				}
				r.samples[k][f[i+1]] = append(r.samples[k][f[i+1]], v)
			}
		}
	}
	return r, sc.Err()
}

// stat summarises one figure over the counts of a run.
type stat struct {
	n                int
	median, min, max float64
}

func summarise(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	s := slices.Sorted(slices.Values(v))
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{n: len(s), median: med, min: s[0], max: s[len(s)-1]}
}

// get returns the figure unit of benchmark name in pkg (a suffix of the
// import path) at procs, or at the largest GOMAXPROCS measured if procs is
// 0.
func (r *results) get(pkg, name string, procs int, unit string) (stat, bool) {
	var best *key
	for i, k := range r.order {
		if k.name != name || !(k.pkg == pkg || strings.HasSuffix(k.pkg, "/"+pkg)) {
			continue
		}
		if procs != 0 && k.procs != procs {
			continue
		}
		if best == nil || k.procs > best.procs {
			best = &r.order[i]
		}
	}
	if best == nil {
		return stat{}, false
	}
	v, ok := r.samples[*best][unit]
	if !ok {
		return stat{}, false
	}
	return summarise(v), true
}

// has reports whether any benchmark of pkg has a name containing part.
func (r *results) has(pkg, part string) bool {
	for _, k := range r.order {
		if strings.HasSuffix(k.pkg, "/"+pkg) && strings.Contains(k.name, part) {
			return true
		}
	}
	return false
}

// row is one line of the summary: a figure beside its comparison.
type row struct {
	what     string
	measured string // the figure, with its spread
	against  string // the comparison from the same run
	ratio    string
	target   string
	status   string // met, missed or not measured
	note     string // why, or what else the run says
}

const notMeasured = "not measured"

func (r *results) rows() []row {
	var rows []row
	add := func(x row) { rows = append(rows, x) }
	ns := func(pkg, name string, procs int) (stat, bool) { return r.get(pkg, name, procs, "ns/op") }

	// 1. The signer against raw C_Sign.
	raw, ok1 := ns("signer/p11", "RawCSign", 0)
	sig, ok2 := ns("signer/p11", "SignerSign", 0)
	if ok1 && ok2 {
		ratio := raw.median / sig.median
		x := row{what: "RSA 2048 signature through p11.TokenSigner (SoftHSM2)", measured: dur(sig), against: "raw C_SignInit + C_Sign: " + dur(raw),
			ratio: fmt.Sprintf("%.3f (raw time ÷ signer time)", ratio), target: "≥ 0.95", status: metIf(ratio >= 0.95)}
		if il, ok := r.get("signer/p11", "SignerVsRawInterleaved", 0, "ratio"); ok {
			x.ratio += fmt.Sprintf("; interleaved pairs: %s", spread(il, "%.3f"))
			x.status = metIf(il.median >= 0.95)
		}
		if rp, ok := ns("signer/p11", "RawCSignParallel", 2); ok {
			if sp, ok := ns("signer/p11", "SignerSignParallel", 2); ok {
				x.note = fmt.Sprintf("With 2 goroutines: signer %s, raw %s, ratio %.3f.", dur(sp), dur(rp), rp.median/sp.median)
			}
		}
		add(x)
	} else {
		add(row{what: "signature through the signer vs raw C_Sign", target: "≥ 0.95", status: notMeasured, note: "signer benchmarks missing from the run"})
	}

	// 2. Two goroutines against one.
	s1, ok1 := ns("signer/p11", "SignerSignParallel", 1)
	s2, ok2 := ns("signer/p11", "SignerSignParallel", 2)
	if ok1 && ok2 {
		ratio := s1.median / s2.median
		x := row{what: "signatures per second, 2 goroutines (-cpu 2) vs 1 (-cpu 1), signer on SoftHSM2", measured: "2: " + dur(s2) + " per signature",
			against: "1: " + dur(s1), ratio: fmt.Sprintf("%.2f× throughput", ratio), target: "≥ 1.7", status: metIf(ratio >= 1.7)}
		if one, ok := ns("signer/p11", "SignerSign", 0); ok {
			x.note = fmt.Sprintf("Against one goroutine without RunParallel (SignerSign, %s), 2 goroutines give %.2f×. ", dur(one), one.median/s2.median)
		}
		if r1, ok := ns("signer/p11", "RawCSignParallel", 1); ok {
			if r2, ok := ns("signer/p11", "RawCSignParallel", 2); ok {
				rr := r1.median / r2.median
				x.note += fmt.Sprintf("Raw C_Sign on one session per goroutine scales %.2f× in the same run.", rr)
				if ratio < 1.7 && rr < 1.7 {
					x.note += " The ceiling is SoftHSM2 (and the benchmark process sharing the 2 cores), not the signer's session pool."
				}
			}
		}
		if c1, ok := ns("grant", "CachedTokenParallel", 1); ok {
			if c2, ok := ns("grant", "CachedTokenParallel", 2); ok {
				x.note += fmt.Sprintf(" Cached Token() scales %.2f× (%s → %s).", c1.median/c2.median, dur(c1), dur(c2))
			}
		}
		add(x)
	} else {
		add(row{what: "2 goroutines vs 1", target: "≥ 1.7", status: notMeasured, note: "Parallel benchmarks at -cpu 1,2 missing from the run"})
	}

	// 3. A signed grant against the signature alone.
	g, ok1 := ns("grant", "Grant", 0)
	so, ok2 := ns("grant", "SignatureOnly", 0)
	if ok1 && ok2 {
		added := g.median/so.median - 1
		x := row{what: "a complete signed grant (claims, x5c header of 2 certificates, RS256, in-memory key)", measured: dur(g),
			against: "the RSA 2048 signature alone: " + dur(so), ratio: fmt.Sprintf("%+.1f%% added", 100*added), target: "< 5% added", status: metIf(added < 0.05)}
		if il, ok := r.get("grant", "GrantVsSignatureInterleaved", 0, "added-%"); ok {
			x.ratio += fmt.Sprintf("; interleaved pairs: %s", spread(il, "%+.1f%%"))
			x.status = metIf(il.median < 5)
		}
		if gw, ok := ns("grant", "GrantWithoutSignature", 0); ok {
			x.note = fmt.Sprintf("Building the grant with a signer that does no work (claims, header, base64, SHA-256 of the signing input) costs %s, %.1f%% of the signature.",
				dur(gw), 100*gw.median/so.median)
		}
		add(x)
	} else {
		add(row{what: "signed grant vs signature alone", target: "< 5% added", status: notMeasured})
	}

	// 4. A cached Token().
	ct, ok1 := ns("grant", "CachedToken", 0)
	ca, ok2 := r.get("grant", "CachedToken", 0, "allocs/op")
	if ok1 && ok2 {
		x := row{what: "Source.Token() on a cached token", measured: dur(ct) + ", " + num(ca) + " allocs", against: "absolute target",
			ratio: "-", target: "< 200 ns, 0 allocs", status: metIf(ct.median < 200 && ca.max == 0)}
		if cp, ok := ns("grant", "CachedTokenParallel", 2); ok {
			x.note = fmt.Sprintf("From 2 goroutines at once: %s per call.", dur(cp))
		}
		add(x)
	} else {
		add(row{what: "cached Token()", target: "< 200 ns, 0 allocs", status: notMeasured})
	}

	// 5. A whole mp-hsm token process against the shell script.
	mp, ok1 := ns("cmd/mp-hsm", "TokenVsManual/mp-hsm", 0)
	man, ok2 := ns("cmd/mp-hsm", "TokenVsManual/manual", 0)
	if ok1 && ok2 {
		ratio := mp.median / man.median
		x := row{what: "a whole `mp-hsm token` process (start, module load, login, key search, certificates, signature, exchange)", measured: dur(mp),
			against: "bench/manual.sh (pkcs11-tool, openssl, curl), same token, PIN file and emulator: " + dur(man),
			ratio:   fmt.Sprintf("%.3f of the script's time", ratio), target: "≤ 0.5", status: metIf(ratio <= 0.5)}
		if tc, ok := ns("cmd/mp-hsm", "TokenCommand", 0); ok {
			x.note = fmt.Sprintf("With --well-known (one more HTTP request, for the metadata) and MP_HSM_PIN: %s.", dur(tc))
			if rss, ok := r.get("cmd/mp-hsm", "TokenCommand", 0, "maxrss-KiB"); ok {
				x.note += fmt.Sprintf(" Peak RSS %.1f MiB.", rss.max/1024)
			}
		}
		add(x)
	} else {
		add(row{what: "`mp-hsm token` vs bench/manual.sh", target: "≤ 0.5", status: notMeasured, note: "BenchmarkTokenVsManual missing (it skips without pkcs11-tool, openssl or curl)"})
	}

	// 6-8. The daemon.
	noDaemon := func(bench string) string {
		if !r.has("daemon", "") {
			return "not measured: the daemon benchmarks do not exist yet"
		}
		return "not measured: the daemon's benchmarks have no " + bench + " yet"
	}
	dd, ok1 := ns("daemon", "ServeCachedToken/daemon", 0)
	db, ok2 := ns("daemon", "ServeCachedToken/bare", 0)
	if ok1 && ok2 {
		ratio := db.median / dd.median
		x := row{what: "daemon: cached token, POST /token over loopback TCP (Basic auth, form, cache, JSON), 4×GOMAXPROCS clients", measured: dur(dd) + " per request",
			against: "a bare net/http handler answering the same bytes: " + dur(db), ratio: fmt.Sprintf("%.2f (bare time ÷ daemon time)", ratio),
			target: "≥ 0.5", status: metIf(ratio >= 0.5)}
		if il, ok := r.get("daemon", "ServeCachedToken/interleaved", 0, "ratio"); ok {
			x.note = fmt.Sprintf("Interleaved (daemon and bare in turn under the same load): ratio %s.", spread(il, "%.2f"))
		}
		if h, ok := ns("daemon", "HandlerCachedToken", 0); ok {
			x.note += fmt.Sprintf(" ServeHTTP alone, without a network: %s.", dur(h))
		}
		add(x)
	} else {
		add(row{what: "daemon cached tokens over loopback vs bare net/http", target: "≥ 0.5", status: notMeasured, note: noDaemon("BenchmarkServeCachedToken (daemon and bare)")})
	}
	if h, ok := r.get("daemon", "Heap10000Keys", 0, "heap-MiB"); ok {
		x := row{what: "daemon heap with 10,000 cached keys", measured: spread(h, "%.1f MiB"), against: "absolute target", ratio: "-",
			target: "< 50 MiB", status: metIf(h.max < 50)}
		if pk, ok := r.get("daemon", "Heap10000Keys", 0, "B/key"); ok {
			x.note = fmt.Sprintf("%.0f bytes per cached key.", pk.median)
		}
		add(x)
	} else {
		add(row{what: "daemon heap with 10,000 keys", target: "< 50 MiB", status: notMeasured, note: noDaemon("BenchmarkHeap10000Keys")})
	}
	add(r.coldStartRow(noDaemon("cold-start benchmark (a name with ColdStart)")))
	return rows
}

// coldStartRow reports the daemon's cold-start benchmark: whatever
// benchmark of package daemon has ColdStart in its name, with all its
// figures.
func (r *results) coldStartRow(noDaemon string) row {
	x := row{what: "daemon cold start: 1,000 keys at once under the concurrency limit", target: "total time; peak in-flight ≤ the limit", against: "-", ratio: "-"}
	for _, k := range r.order {
		if !strings.HasSuffix(k.pkg, "/daemon") || !strings.Contains(k.name, "ColdStart") {
			continue
		}
		var parts []string
		peak, limit := -1.0, -1.0
		for _, unit := range slices.Sorted(func(yield func(string) bool) {
			for u := range r.samples[k] {
				if !yield(u) {
					return
				}
			}
		}) {
			s := summarise(r.samples[k][unit])
			switch {
			case unit == "ns/op":
				parts = append(parts, "total "+dur(s))
			case unit == "B/op" || unit == "allocs/op":
			default:
				parts = append(parts, unit+" "+spread(s, "%.4g"))
				if strings.Contains(unit, "peak") || strings.Contains(unit, "inflight") || strings.Contains(unit, "in-flight") {
					peak = max(peak, s.max)
				}
				if strings.Contains(unit, "limit") || strings.Contains(unit, "max-concurrent") {
					limit = s.median
				}
			}
		}
		x.what = "daemon cold start (Benchmark" + k.name + ")"
		x.measured = strings.Join(parts, "; ")
		switch {
		case peak >= 0 && limit > 0:
			x.status = metIf(peak <= limit)
		default:
			x.status = "measured"
		}
		return x
	}
	x.status, x.note = notMeasured, noDaemon
	return x
}

func metIf(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

// dur formats a ns/op figure: median (min–max).
func dur(s stat) string {
	return fmt.Sprintf("%s (%s–%s)", fmtNS(s.median), fmtNS(s.min), fmtNS(s.max))
}

func fmtNS(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.3g s", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.3g ms", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3g µs", v/1e3)
	}
	return fmt.Sprintf("%.3g ns", v)
}

func num(s stat) string {
	if s.min == s.max {
		return fmtNum(s.median)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtNum(s.median), fmtNum(s.min), fmtNum(s.max))
}

// fmtNum writes whole numbers in full and others with 4 significant digits.
func fmtNum(v float64) string {
	if v == float64(int64(v)) {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// spread formats a figure with format: median (min–max).
func spread(s stat, format string) string {
	if s.min == s.max {
		return fmt.Sprintf(format, s.median)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", s.median, s.min, s.max)
}

// loadResult is the JSON of bench/load.
type loadResult struct {
	Target   string        `json:"target"`
	Duration time.Duration `json:"duration_per_rate"`
	Stopped  string        `json:"stopped"`
	Points   []struct {
		Offered  float64 `json:"offered_rps"`
		Achieved float64 `json:"achieved_rps"`
		Sent     int     `json:"sent"`
		Failed   int     `json:"failed"`
		P50      float64 `json:"p50_ms"`
		P90      float64 `json:"p90_ms"`
		P99      float64 `json:"p99_ms"`
		Max      float64 `json:"max_ms"`
		LagP50   float64 `json:"lag_p50_ms"`
		LagP99   float64 `json:"lag_p99_ms"`
	} `json:"points"`
}

func drawLoad(ld *loadResult, file string) error {
	p := plot.New()
	p.Title.Text = "mp-hsm serve: cached-token latency against offered load (loopback, open loop)"
	p.Title.Padding = vg.Points(8)
	p.X.Label.Text = "offered load (requests per second)"
	p.Y.Label.Text = "latency (ms)"
	p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	series := []struct {
		name string
		get  func(i int) float64
	}{
		{"p50", func(i int) float64 { return ld.Points[i].P50 }},
		{"p90", func(i int) float64 { return ld.Points[i].P90 }},
		{"p99", func(i int) float64 { return ld.Points[i].P99 }},
	}
	for si, s := range series {
		var xys plotter.XYs
		for i, pt := range ld.Points {
			if v := s.get(i); v > 0 {
				xys = append(xys, plotter.XY{X: pt.Offered, Y: v})
			}
		}
		l, sc, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		c := plotutil.Color(si)
		l.Color, sc.Color = c, c
		sc.Shape = draw.CircleGlyph{}
		p.Add(l, sc)
		p.Legend.Add(s.name, l, sc)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, file)
}

func writeReport(w io.Writer, r *results, ld *loadResult, plotRel string) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("# Benchmarks\n\n")
	p("Generated by `make bench` (scripts/bench.sh, bench/report) from one run; do not edit by hand.\n")
	p("Each figure is the **median** of the run's counts with the **minimum–maximum** in brackets; each\n")
	p("comparison is a ratio of two medians measured in the same `go test` process. Where a pair is\n")
	p("also measured interleaved (both operations in each iteration, in alternating order, timed apart,\n")
	p("so that a drift of the shared machine weighs on both alike), that ratio is shown too and decides\n")
	p("met or missed.\n\n")

	p("## The run\n\n")
	p("| | |\n|---|---|\n")
	p("| Date | %s |\n", orDash(r.notes["date"]))
	p("| Machine | %s, %s logical cores (GOMAXPROCS %s), %s |\n", cpuModel(r.cpu), orDash(r.notes["cores"]), orDash(r.notes["gomaxprocs"]), orDash(r.notes["kernel"]))
	p("| Go | %s |\n", orDash(r.notes["go"]))
	p("| Commit | %s |\n", orDash(r.notes["commit"]))
	p("| SoftHSM2 | %s |\n", orDash(r.notes["softhsm"]))
	p("| Counts | %s per benchmark, -benchtime %s |\n", orDash(r.notes["count"]), orDash(r.notes["benchtime"]))
	p("| Wall time | %s |\n\n", orDash(r.notes["elapsed"]))
	if len(r.cmds) > 0 {
		p("Commands:\n\n```\n")
		for _, c := range r.cmds {
			p("%s\n", c)
		}
		p("```\n\n")
	}

	p("## Targets\n\n")
	p("| Figure | Measured | Compared with (same run) | Ratio | Target | |\n|---|---|---|---|---|---|\n")
	rows := r.rows()
	for _, x := range rows {
		p("| %s | %s | %s | %s | %s | %s |\n", x.what, orDash(x.measured), orDash(x.against), orDash(x.ratio), x.target, x.status)
	}
	p("\n")
	var notes []string
	for _, x := range rows {
		if x.note != "" {
			notes = append(notes, fmt.Sprintf("- %s: %s", strings.SplitN(x.what, " (", 2)[0], x.note))
		}
	}
	if len(notes) > 0 {
		p("Notes from the same run:\n\n%s\n\n", strings.Join(notes, "\n"))
	}
	var missed []string
	for _, x := range rows {
		if x.status == "**missed**" {
			missed = append(missed, fmt.Sprintf("- %s: measured %s, target %s.", strings.SplitN(x.what, " (", 2)[0], x.ratio, x.target))
		}
	}
	if len(missed) > 0 {
		p("**Missed in this run** (the notes above say what the same run shows about why):\n\n%s\n\n", strings.Join(missed, "\n"))
	}

	p("## Daemon latency against offered load\n\n")
	switch {
	case ld == nil || len(ld.Points) == 0:
		p("TODO: not measured. The load generator (bench/load) needs `mp-hsm serve`; this run has no\n")
		p("result from it (the daemon did not exist or did not start; see the output of make bench).\n\n")
	default:
		p("%s. Open loop: each rate is offered for %s whether or not earlier requests were answered; latency\n", ld.Target, ld.Duration)
		p("is from send to the end of the answer. \"Lag\" is how late the generator sent requests after they\n")
		p("were due (its timer, or CPU it could not get: it shares the 2 cores with the daemon).\n\n")
		if plotRel != "" {
			p("![daemon latency percentiles against offered load](%s)\n\n", plotRel)
		}
		p("| Offered (req/s) | Answered (req/s) | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | Failed | Lag p50 / p99 (ms) |\n|---|---|---|---|---|---|---|---|\n")
		for _, pt := range ld.Points {
			p("| %.0f | %.0f | %.2f | %.2f | %.2f | %.1f | %d of %d | %.2f / %.2f |\n", pt.Offered, pt.Achieved, pt.P50, pt.P90, pt.P99, pt.Max, pt.Failed, pt.Sent, pt.LagP50, pt.LagP99)
		}
		if ld.Stopped != "" {
			p("\nThe ramp stopped: %s.\n", ld.Stopped)
		}
		p("\n")
	}

	p("## Every benchmark of the run\n\n")
	p("| Package | Benchmark | GOMAXPROCS | Counts | Time per op | B/op | allocs/op | Other |\n|---|---|---|---|---|---|---|---|\n")
	for _, k := range r.order {
		s := r.samples[k]
		t := summarise(s["ns/op"])
		other := []string{}
		for _, u := range slices.Sorted(func(yield func(string) bool) {
			for u := range s {
				if !yield(u) {
					return
				}
			}
		}) {
			if u != "ns/op" && u != "B/op" && u != "allocs/op" {
				other = append(other, u+" "+spread(summarise(s[u]), "%.4g"))
			}
		}
		bop, aop := "-", "-"
		if v, ok := s["B/op"]; ok {
			bop = num(summarise(v))
		}
		if v, ok := s["allocs/op"]; ok {
			aop = num(summarise(v))
		}
		p("| %s | %s | %d | %d | %s | %s | %s | %s |\n", strings.TrimPrefix(k.pkg, "github.com/mp-hsm/mp-hsm/"), k.name, k.procs, t.n, dur(t), bop, aop, orDash(strings.Join(other, "; ")))
	}
	p("\n")
	if len(r.problems) > 0 {
		p("## Problems in this run\n\n")
		for _, pr := range r.problems {
			p("- `%s`\n", pr)
		}
		p("\n")
	}
	p("Raw output: bin/bench/bench.txt and bin/bench/load.json after `make bench` (not committed).\n")
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

// cpuModel prefers /proc/cpuinfo's model name to go test's cpu line.
func cpuModel(fromGoTest string) string {
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	if fromGoTest != "" {
		return fromGoTest
	}
	return runtime.GOARCH
}
