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

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string
		shared        bool
	}{
		{"plain", "1234", 0o600, "1234", false},
		{"newline", "1234\n", 0o600, "1234", false},
		{"crlf", "1234\r\n", 0o400, "1234", false},
		{"group", "1234\n", 0o640, "1234", true},
	} {
		got, shared, err := ReadSecret(write(tc.name, tc.content, tc.mode), MaxPIN)
		if err != nil || string(got) != tc.want || shared != tc.shared {
			t.Errorf("%s: ReadSecret = %q, %v, %v; want %q, %v", tc.name, got, shared, err, tc.want, tc.shared)
		}
	}
	for _, tc := range []struct{ name, content, reason string }{
		{"empty", "", "is empty"},
		{"newline-only", "\n", "is empty"},
		{"crlf-only", "\r\n", "is empty"},
		{"two-lines", "1234\n5678\n", "holds a control character at byte 5"},
		{"nul", "12\x0034", "holds a control character at byte 3"},
	} {
		p := write(tc.name, tc.content, 0o600)
		got, _, err := ReadSecret(p, MaxPIN)
		var fe *Error
		if got != nil || !errors.Is(err, ErrNotSecret) || !errors.As(err, &fe) || fe.Path != p || !strings.HasPrefix(fe.Reason, tc.reason) {
			t.Errorf("%s: ReadSecret = %q, %v; want ErrNotSecret saying %q", tc.name, got, err, tc.reason)
		}
		if err != nil && tc.content != "" && strings.Contains(err.Error(), "1234") {
			t.Errorf("%s: the error %q quotes the content", tc.name, err)
		}
	}
	if _, _, err := ReadSecret(write("big", strings.Repeat("1", MaxPIN+1), 0o600), MaxPIN); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadSecret of a file over the limit: %v, want ErrTooLarge", err)
	}
	if _, _, err := ReadSecret(write("writable", "1234\n", 0o666), MaxPIN); !errors.Is(err, ErrUnsafe) {
		t.Errorf("ReadSecret of a file others can write: %v, want ErrUnsafe", err)
	}
}
