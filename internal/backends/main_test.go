//go:build cgo

package backends

import (
	"os"
	"testing"
)

// TestMain runs the tests in a private mount namespace (see Private), so
// that the opencryptoki tests and BenchmarkOpenCryptokiStartStop use a
// soft token of their own, whoever's the machine's is.
func TestMain(m *testing.M) {
	if code, ran := Private(); ran {
		os.Exit(code)
	}
	os.Exit(m.Run())
}
