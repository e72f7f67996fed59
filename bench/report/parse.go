package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

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
