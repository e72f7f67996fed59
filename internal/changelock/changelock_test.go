//go:build unix

package changelock_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/changelock"
)

// TestAcquireExcludes: a second Acquire of the same thing waits for the
// first's Unlock (flock is per open file, so this holds within one process
// as between processes), and gives up when its context ends.
func TestAcquireExcludes(t *testing.T) {
	t.Setenv("MP_HSM_LOCK_DIR", filepath.Join(t.TempDir(), "locks"))
	ctx := context.Background()
	l1, err := changelock.Acquire(ctx, "token", "SoftHSM", "abc")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	if _, err := changelock.Acquire(short, "token", "SoftHSM", "abc"); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "another mp-hsm process") {
		t.Fatalf("second Acquire while held: %v, want a deadline error naming the other process", err)
	}
	other, err := changelock.Acquire(ctx, "token", "SoftHSM", "other")
	if err != nil {
		t.Fatalf("another token's lock: %v", err)
	}
	other.Unlock()
	got := make(chan error, 1)
	go func() {
		l2, err := changelock.Acquire(ctx, "token", "SoftHSM", "abc")
		if err == nil {
			l2.Unlock()
		}
		got <- err
	}()
	l1.Unlock()
	l1.Unlock() // twice is harmless
	if err := <-got; err != nil {
		t.Fatalf("Acquire after Unlock: %v", err)
	}
}

// TestDirRefused: a lock directory others may write to, or a symlink, is
// refused.
func TestDirRefused(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MP_HSM_LOCK_DIR", open)
	if _, err := changelock.Acquire(context.Background(), "token", "x"); err == nil || !strings.Contains(err.Error(), "chmod go-w") {
		t.Errorf("world-writable lock directory: %v", err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(open, link); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MP_HSM_LOCK_DIR", link)
	if _, err := changelock.Acquire(context.Background(), "token", "x"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("symlinked lock directory: %v", err)
	}
}

// TestAcquireModuleResolves: the module lock of a path and of a symbolic
// link to it is one lock, so a second change through either name waits;
// another module's is another lock.
func TestAcquireModuleResolves(t *testing.T) {
	t.Setenv("MP_HSM_LOCK_DIR", filepath.Join(t.TempDir(), "locks"))
	dir := t.TempDir()
	mod := filepath.Join(dir, "libmodule.so")
	if err := os.WriteFile(mod, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.so")
	if err := os.Symlink(mod, link); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l, err := changelock.AcquireModule(ctx, mod)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	short, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	if _, err := changelock.AcquireModule(short, link); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "same PKCS#11 module") {
		t.Fatalf("module lock through a link while held: %v, want a deadline error naming the module", err)
	}
	other, err := changelock.AcquireModule(ctx, filepath.Join(dir, "other.so"))
	if err != nil {
		t.Fatalf("another module's lock: %v", err)
	}
	other.Unlock()
}
