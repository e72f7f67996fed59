// Package p11spy counts, for tests, the PKCS#11 calls a program makes, by
// putting OpenSC's pkcs11-spy module between the program and the real
// module and reading the spy's log.
//
// The spy reads PKCS11SPY (the real module) and PKCS11SPY_OUTPUT (the log)
// from the environment when it is loaded: give them to a subprocess with
// Env, or set them with t.Setenv before a test loads the spy in-process.
// Its log has one entry per call, starting with a line "N: C_Name" (N
// counts from 0) and ending with "Returned: ..."; the entry of C_Login
// shows the PIN, so the log stays in the test's temporary directory.
package p11spy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// triplets are Debian's multiarch directories, where opensc-pkcs11
// installs the spy.
var triplets = map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}

// Path returns the spy module's path, skipping the test when it is not
// installed (apt-get install opensc-pkcs11, or make deps), unless CI is
// set: then the test fails.
func Path(t testing.TB) string {
	t.Helper()
	p := "/usr/lib/" + triplets[runtime.GOARCH] + "/pkcs11-spy.so"
	if _, err := os.Stat(p); err != nil {
		msg := fmt.Sprintf("cannot count PKCS#11 calls without OpenSC's %s (apt-get install opensc-pkcs11, or make deps)", p)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// Env returns the environment entries (KEY=value) that make the spy
// forward to real and log to log.
func Env(real, log string) []string {
	return []string{"PKCS11SPY=" + real, "PKCS11SPY_OUTPUT=" + log}
}

// Call is one entry of the log.
type Call struct {
	Name string // "C_Sign"
	Text string // the entry's lines after the first, arguments and return value
}

var head = regexp.MustCompile(`^[0-9]+: (C_[A-Za-z]+)$`)

// Read returns the calls in the log, in order; none when the log does not
// exist (the spy was never loaded).
func Read(t testing.TB, log string) []Call {
	t.Helper()
	data, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var calls []Call
	var text strings.Builder
	flush := func() {
		if len(calls) > 0 {
			calls[len(calls)-1].Text = text.String()
		}
		text.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := head.FindStringSubmatch(sc.Text()); m != nil {
			flush()
			calls = append(calls, Call{Name: m[1]})
			continue
		}
		text.WriteString(sc.Text())
		text.WriteByte('\n')
	}
	flush()
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return calls
}

// Counts tallies calls by function name.
func Counts(calls []Call) map[string]int {
	n := map[string]int{}
	for _, c := range calls {
		n[c.Name]++
	}
	return n
}

// Format writes counts as "C_A=n C_B=m ...", the most frequent first (then
// by name), so that a failure message or a report line shows where the
// calls go.
func Format(counts map[string]int) string {
	names := make([]string, 0, len(counts))
	for name := range counts {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		if counts[a] != counts[b] {
			return counts[b] - counts[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("%s=%d", name, counts[name])
	}
	return strings.Join(parts, " ")
}

// Total is the number of calls in counts.
func Total(counts map[string]int) int {
	n := 0
	for _, v := range counts {
		n += v
	}
	return n
}

// Record appends line to the file named by the environment variable
// MP_HSM_CALLS_FILE, when it is set: make bench sets it and bench/report
// reads the figures from that file into docs/BENCHMARKS.md. Lines are
// "name key=value ...".
func Record(t testing.TB, line string) {
	t.Helper()
	path := os.Getenv("MP_HSM_CALLS_FILE")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, line); err != nil {
		t.Fatal(err)
	}
}
