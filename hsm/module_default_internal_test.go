package hsm

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// TestFirstModuleOrder: the default module is the first of the list that
// exists as a regular file, whatever exists after it; a directory or a
// missing file is passed over; none gives tokenerr.ErrModuleNotFound naming them all.
func TestFirstModuleOrder(t *testing.T) {
	dir := t.TempDir()
	proxy := filepath.Join(dir, "p11-kit-proxy.so")
	opensc := filepath.Join(dir, "opensc-pkcs11.so")
	softhsm := filepath.Join(dir, "libsofthsm2.so")
	paths := []string{proxy, opensc, softhsm}
	touch := func(p string) {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := firstModule(paths); !errors.Is(err, tokenerr.ErrModuleNotFound) || !strings.Contains(err.Error(), opensc) {
		t.Fatalf("nothing installed: %v, want tokenerr.ErrModuleNotFound naming every path", err)
	}
	touch(softhsm)
	if got, err := firstModule(paths); err != nil || got != softhsm {
		t.Fatalf("SoftHSM2 alone: %q %v", got, err)
	}
	if err := os.Mkdir(opensc, 0o755); err != nil { // a directory is no module
		t.Fatal(err)
	}
	if got, _ := firstModule(paths); got != softhsm {
		t.Fatalf("with a directory in OpenSC's place: %q, want SoftHSM2", got)
	}
	os.Remove(opensc)
	touch(opensc)
	if got, _ := firstModule(paths); got != opensc {
		t.Fatalf("OpenSC and SoftHSM2: %q, want OpenSC", got)
	}
	if err := os.Symlink(softhsm, proxy); err != nil { // Debian ships links
		t.Fatal(err)
	}
	if got, _ := firstModule(paths); got != proxy {
		t.Fatalf("all three: %q, want the p11-kit proxy", got)
	}
}

// TestDefaultModulePaths: the order and the architecture's directory.
func TestDefaultModulePaths(t *testing.T) {
	got := DefaultModulePaths()
	if len(got) != 3 || !strings.HasSuffix(got[0], "/p11-kit-proxy.so") || !strings.HasSuffix(got[1], "/opensc-pkcs11.so") ||
		!strings.HasSuffix(got[2], "/libsofthsm2.so") {
		t.Fatalf("DefaultModulePaths() = %q, want p11-kit proxy, OpenSC, SoftHSM2", got)
	}
	if runtime.GOARCH == "amd64" && got[0] != "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so" {
		t.Errorf("on amd64: %q", got[0])
	}
}
