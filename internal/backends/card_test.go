//go:build cgo

package backends

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/softhsm"
)

// TestStartCard starts the card: OpenSC shows its token through the
// private pcscd; pulled, the token is gone from OpenSC's slot within 5 s;
// put back, it is there again.
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
	defer func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	}()
	t.Logf("started in %v: %q serial %q", time.Since(start), r.Label, r.Serial)
	if r.Label == "" || r.Serial == "" {
		t.Fatalf("label %q serial %q, want both", r.Label, r.Serial)
	}
	if err := r.Card.Remove(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _ := tpmRun(append(os.Environ(), r.Env...), []string{"pkcs11-tool", "--module", OpenSCPath(), "-L"})
		if !strings.Contains(out, r.Serial) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the card is still listed 5 s after Remove:\n%s", out)
		}
	}
	if err := r.Card.Insert(); err != nil {
		t.Fatal(err)
	}
	if _, serial, err := r.Card.token(r.Env); err != nil || serial != r.Serial {
		t.Fatalf("after Insert: serial %q, %v; want %q", serial, err, r.Serial)
	}
}
