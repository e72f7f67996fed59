package backends

import (
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/softhsm"
)

// TestStartCard starts the card and stops it: OpenSC shows its token
// through the private pcscd.
func TestStartCard(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r, err := StartCard(t.TempDir(), ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started in %v: %q serial %q", time.Since(start), r.Label, r.Serial)
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
}
