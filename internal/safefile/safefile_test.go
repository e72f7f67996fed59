package safefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "pin")
	if err := os.WriteFile(ok, []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(ok, link); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, MaxPIN+1), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}

	for _, p := range []string{ok, link} {
		if data, err := Read(p, MaxPIN); err != nil || string(data) != "1234\n" {
			t.Errorf("Read(%s) = %q, %v", p, data, err)
		}
	}
	for _, tc := range []struct {
		path   string
		is     error
		reason string
	}{
		{filepath.Join(dir, "missing"), fs.ErrNotExist, "does not exist"},
		{dir, ErrNotRegular, "is a directory"},
		{fifo, ErrNotRegular, "is a FIFO"},
		{"/dev/zero", ErrNotRegular, "is a device"},
		{big, ErrTooLarge, "larger than the 1024 bytes"},
	} {
		done := make(chan error, 1)
		go func() { _, err := Read(tc.path, MaxPIN); done <- err }()
		select {
		case err := <-done:
			var fe *Error
			if !errors.Is(err, tc.is) || !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.reason) || !strings.HasPrefix(err.Error(), tc.path+": ") {
				t.Errorf("Read(%s) = %v, want %v saying %q", tc.path, err, tc.is, tc.reason)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Read(%s) blocked", tc.path)
		}
	}
}

func TestCheckRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckRegular(fifo); !errors.Is(err, ErrNotRegular) {
		t.Errorf("FIFO: %v", err)
	}
	if err := CheckRegular("/bin/sh"); err != nil {
		t.Errorf("/bin/sh: %v", err)
	}
}
