package socket_test

import (
	"errors"
	"github.com/mp-hsm/mp-hsm/daemon/socket"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestListenConfigErrors: what the user got wrong is a configuration error
// (mp-hsm serve exits 2 for it), named.
func TestListenConfigErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := "unix:/tmp/" + strings.Repeat("x", 110)
	for _, tc := range []struct {
		addr  string
		opts  socket.Options
		wants string
	}{
		{"unix:" + file, socket.Options{}, "exists and is not a socket"},
		{"unix:" + filepath.Join(dir, "s"), socket.Options{SocketGroup: "no-such-group-mphsm"}, "no-such-group-mphsm"},
		{"tcp:127.0.0.1:99999", socket.Options{}, `port "99999"`},
		{"tcp:127.0.0.1:http-nope", socket.Options{}, `port "http-nope"`},
		{long, socket.Options{}, "at most 107"},
	} {
		ln, err := socket.Listen(tc.addr, tc.opts)
		if err == nil {
			ln.Close()
			t.Errorf("Listen(%s) succeeded", tc.addr)
			continue
		}
		if !errors.Is(err, socket.ErrConfig) || !strings.Contains(err.Error(), tc.wants) {
			t.Errorf("Listen(%s) = %v, want ErrConfig saying %q", tc.addr, err, tc.wants)
		}
	}
	if data, _ := os.ReadFile(file); string(data) != "keep" {
		t.Error("the file in the socket's place was changed")
	}
}

// TestListenLongSocketPaths: a socket path close to the limit binds, with
// mode 0600 (0660 with a group), though the temporary name it is bound
// under first would be longer.
func TestListenLongSocketPaths(t *testing.T) {
	base, err := os.MkdirTemp("", "l")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	gid := strconv.Itoa(os.Getgid())
	for _, n := range []int{98, 107} {
		for _, group := range []string{"", gid} {
			path := filepath.Join(base, "a")
			path += strings.Repeat("b", n-len(path))
			ln, err := socket.Listen("unix:"+path, socket.Options{SocketGroup: group})
			if err != nil {
				t.Fatalf("%d bytes, group %q: %v", len(path), group, err)
			}
			fi, err := os.Lstat(path)
			want := fs.FileMode(0o600)
			if group != "" {
				want = 0o660
			}
			if err != nil || fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != want {
				t.Errorf("%d bytes, group %q: %v %v, want a socket of mode %v", len(path), group, fi.Mode(), err, want)
			}
			ln.Close()
			if entries, _ := os.ReadDir(base); len(entries) != 0 {
				t.Errorf("left behind: %v", entries)
			}
		}
	}
}
