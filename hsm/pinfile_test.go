//go:build cgo

package hsm_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// TestPINFile logs in with the PIN read from a file, and refuses, before
// any C_Login, a file that cannot hold a PIN.
func TestPINFile(t *testing.T) {
	tok := softhsm.New(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "pin")
	if err := os.WriteFile(good, []byte(tok.PIN+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ht := open(t, tok, "")
	if err := ht.Login(hsm.PINFile(good), hsm.LoginOptions{}); err != nil {
		t.Fatalf("Login with PINFile: %v", err)
	}

	twoLines := filepath.Join(dir, "two-lines")
	if err := os.WriteFile(twoLines, []byte(tok.PIN+"\n"+tok.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want error
		text string
	}{
		{filepath.Join(dir, "missing"), fs.ErrNotExist, "does not exist"},
		{twoLines, safefile.ErrNotSecret, fmt.Sprintf("holds a control character at byte %d", len(tok.PIN)+1)},
		{dir, safefile.ErrNotRegular, "is a directory"},
	} {
		pin, err := hsm.PINFile(tc.path)()
		if pin != nil || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "PIN file "+tc.path+": "+tc.text) {
			t.Errorf("PINFile(%s) = %q, %v; want %v saying %q", tc.path, pin, err, tc.want, tc.text)
		}
		if err != nil && strings.Contains(err.Error(), tok.PIN) {
			t.Errorf("the error %q holds the PIN", err)
		}
	}
}
