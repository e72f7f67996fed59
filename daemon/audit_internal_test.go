package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestAuditReopenWhileWriting renames and reopens an audit log while
// lines are written to it: no line is lost, torn or written twice, and the
// new files have mode 0600.
func TestAuditReopenWhileWriting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	a, err := OpenAuditLog(path)
	if err != nil {
		t.Fatal(err)
	}
	const writers, lines = 4, 300
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				if err := a.write(fmt.Appendf(nil, "{\"w\":%d,\"i\":%d}\n", w, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := range 10 {
		if err := os.Rename(path, fmt.Sprintf("%s.%d", path, i)); err != nil {
			t.Fatal(err)
		}
		if err := a.Reopen(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	files, _ := filepath.Glob(path + "*")
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, st.Mode().Perm())
		}
		data, _ := os.ReadFile(f)
		for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
			if l == "" {
				continue
			}
			if !strings.HasPrefix(l, `{"w":`) || !strings.HasSuffix(l, "}") || seen[l] {
				t.Fatalf("%s: a torn or repeated line %q", f, l)
			}
			seen[l] = true
		}
	}
	if len(seen) != writers*lines {
		t.Errorf("%d lines in %d files; want %d", len(seen), len(files), writers*lines)
	}
}
