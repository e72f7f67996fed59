package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

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

	add(r.rpcRow())

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
			target: "≥ 0.9", status: metIf(ratio >= 0.9)}
		if il, ok := r.get("daemon", "ServeCachedToken/interleaved", 0, "ratio"); ok {
			// The interleaved pairs decide, as for the signer: both see the
			// same drift of the shared machine.
			x.ratio += fmt.Sprintf("; interleaved pairs: %s", spread(il, "%.3f"))
			x.status = metIf(il.median >= 0.9)
			x.note = fmt.Sprintf("Interleaved (daemon and bare in turn under the same load): ratio %s.", spread(il, "%.2f"))
		}
		if h, ok := ns("daemon", "HandlerCachedToken", 0); ok {
			x.note += fmt.Sprintf(" ServeHTTP alone, without a network: %s.", dur(h))
		}
		add(x)
	} else {
		add(row{what: "daemon cached tokens over loopback vs bare net/http", target: "≥ 0.9", status: notMeasured, note: noDaemon("BenchmarkServeCachedToken (daemon and bare)")})
	}
	add(r.clientsRow(noDaemon("BenchmarkServeCachedTokenClients (daemon and bare)")))
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

// clientsRow reports the daemon's cached-token figure with the
// configuration of an organisation (issue 13): three clients, scope
// policies and the audit log on, against the bare handler; the
// interleaved pairs decide, as for the single client.
func (r *results) clientsRow(missing string) row {
	const target = "≥ 0.8"
	dd, ok1 := r.get("daemon", "ServeCachedTokenClients/daemon", 0, "ns/op")
	db, ok2 := r.get("daemon", "ServeCachedTokenClients/bare", 0, "ns/op")
	if !ok1 || !ok2 {
		return row{what: "daemon cached tokens with three clients and the audit log vs bare net/http", target: target, status: notMeasured, note: missing}
	}
	ratio := db.median / dd.median
	x := row{what: "daemon: cached token with three clients, scope policies and the audit log on (to a file), over loopback TCP", measured: dur(dd) + " per request",
		against: "a bare net/http handler answering the same bytes: " + dur(db), ratio: fmt.Sprintf("%.2f (bare time ÷ daemon time)", ratio),
		target: target, status: metIf(ratio >= 0.8)}
	if il, ok := r.get("daemon", "ServeCachedTokenClients/interleaved", 0, "ratio"); ok {
		x.ratio += fmt.Sprintf("; interleaved pairs: %s", spread(il, "%.3f"))
		x.status = metIf(il.median >= 0.8)
		x.note = fmt.Sprintf("Interleaved (daemon and bare in turn under the same load): ratio %s.", spread(il, "%.2f"))
	}
	return x
}

// rpcRow reports BenchmarkTokenRPC: a whole `mp-hsm token` over p11-kit's
// RPC with a delay per round trip, against internal/p11bare over the same
// link. The interleaved pairs decide, as for the signer.
func (r *results) rpcRow() row {
	const what, target = "a whole `mp-hsm token` over p11-kit's RPC (a network HSM), 2 ms per round trip", "≤ 1.1"
	mp, ok1 := r.get("cmd/mp-hsm", "TokenRPC/mp-hsm", 0, "ns/op")
	bare, ok2 := r.get("cmd/mp-hsm", "TokenRPC/bare", 0, "ns/op")
	if !ok1 || !ok2 {
		return row{what: what, target: target, status: notMeasured, note: "BenchmarkTokenRPC missing (it skips without p11-kit and p11-kit-client.so)"}
	}
	ratio := mp.median / bare.median
	x := row{what: what, measured: dur(mp),
		against: "internal/p11bare (miekg/pkcs11, the minimum of calls, no HTTP) over the same link: " + dur(bare),
		ratio:   fmt.Sprintf("%.3f of the bare program's time", ratio), target: target, status: metIf(ratio <= 1.1)}
	if il, ok := r.get("cmd/mp-hsm", "TokenRPC/interleaved", 0, "ratio"); ok {
		x.ratio += fmt.Sprintf("; interleaved pairs: %s", spread(il, "%.3f"))
		x.status = metIf(il.median <= 1.1)
	}
	x.note = "Both are whole processes; mp-hsm's time includes its HTTP exchange with the emulator, which the bare program does not make."
	return x
}
