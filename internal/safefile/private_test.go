package safefile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadPrivate: a config, PIN or secret file that another user can
// change is refused with the command that fixes it; one only its owner or
// root can change is read, and who may read it is told.
func TestReadPrivate(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	own := write("own", 0o600)
	readable := write("readable", 0o644)
	for _, tc := range []struct {
		path    string
		mode    os.FileMode
		readers bool
	}{{own, 0o600, false}, {readable, 0o644, true}} {
		data, fi, err := ReadPrivate(tc.path, MaxPIN)
		if err != nil || string(data) != "x\n" || ReadableByOthers(fi) != tc.readers {
			t.Errorf("ReadPrivate(%s) = %q, %v, readable by others %v; want x, nil, %v", tc.path, data, err, fi != nil && ReadableByOthers(fi), tc.readers)
		}
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(write("target", 0o666), link); err != nil {
		t.Fatal(err)
	}
	type refusal struct {
		path string
		says []string
	}
	cases := []refusal{
		{write("world", 0o666), []string{"can be changed by group and others (mode 0666)", "chmod go-w " + filepath.Join(dir, "world")}},
		{write("others", 0o602), []string{"by others (mode 0602)", "chmod go-w"}},
		{write("group", 0o620), []string{"by its group (mode 0620)", "chmod go-w"}},
		{link, []string{"(mode 0666)", "chmod go-w " + link}}, // the file a link names is judged
	}
	if os.Geteuid() == 0 {
		other := write("other-owner", 0o600)
		if err := os.Chown(other, 4321, 4321); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, refusal{other, []string{"is owned by uid 4321, who is neither root nor", "chown root " + other}})
	} else {
		t.Log("not root: the other-owner case needs chown")
	}
	for _, tc := range cases {
		data, _, err := ReadPrivate(tc.path, MaxPIN)
		var fe *Error
		if data != nil || !errors.Is(err, ErrUnsafe) || !errors.As(err, &fe) || fe.Path != tc.path {
			t.Errorf("ReadPrivate(%s) = %q, %v; want ErrUnsafe", tc.path, data, err)
			continue
		}
		for _, s := range tc.says {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("ReadPrivate(%s): %q does not say %q", tc.path, err, s)
			}
		}
	}
	// The rules of Read come first: a FIFO is refused, without blocking.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadPrivate(fifo, MaxPIN); !errors.Is(err, ErrNotRegular) {
		t.Errorf("ReadPrivate(FIFO) = %v, want ErrNotRegular", err)
	}
}

// TestOpenAppend: the audit log is opened only as a regular file, never
// through a symbolic link, and never blocks on a FIFO or grows from a
// device.
func TestOpenAppend(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "audit.log")
	f, err := OpenAppend(p, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("created %v, %v; want mode 0600", fi, err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	readFIFO := filepath.Join(dir, "read-fifo")
	if err := syscall.Mkfifo(readFIFO, 0o600); err != nil {
		t.Fatal(err)
	}
	reader, err := os.OpenFile(readFIFO, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	for _, tc := range []struct{ path, reason string }{
		{link, "is a symbolic link"},
		{fifo, "is a FIFO"},     // no reader: the open would block without O_NONBLOCK
		{readFIFO, "is a FIFO"}, // a reader: opened, then refused
		{"/dev/zero", "is a device"},
		{"/dev/null", "is a device"},
		{dir, "is a directory"},
	} {
		done := make(chan error, 1)
		go func() {
			f, err := OpenAppend(tc.path, 0o600)
			if f != nil {
				f.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			var fe *Error
			if !errors.As(err, &fe) || fe.Path != tc.path || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("OpenAppend(%s) = %v, want an *Error saying %q", tc.path, err, tc.reason)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("OpenAppend(%s) blocked", tc.path)
		}
	}
}
