// Package socket opens the token daemon's listeners (a unix socket never
// reachable with a wider mode than asked for, loopback TCP, systemd socket
// activation) and tells who is at the other end of a unix socket (Peer).
package socket

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrConfig is matched by Listen's errors for a malformed or refused address or option.
var ErrConfig = errors.New("invalid listen configuration")

// Options configure Listen.
type Options struct {
	SocketGroup string      // a unix socket's group (name or id), making its mode 0660
	SocketMode  os.FileMode // a unix socket's permission bits, if not zero (0666 where clients decide)
	AllowRemote bool        // allows TCP addresses that are not loopback
}

// DefaultPath returns where the daemon listens by default: /run/mp-hsm/mp-hsm.sock
// for root, else $XDG_RUNTIME_DIR/mp-hsm.sock, or "" when XDG_RUNTIME_DIR is unset.
func DefaultPath() string {
	if os.Geteuid() == 0 {
		return "/run/mp-hsm/mp-hsm.sock"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "mp-hsm.sock")
	}
	return ""
}

// Listen opens "unix:PATH" or "tcp:HOST:PORT" (HOST an IP address or
// localhost, loopback unless AllowRemote; port 0 chooses a free port).
//
// A unix socket is bound under a temporary name in a private directory, given its
// mode (0600, 0660 with SocketGroup) and group, and only then renamed into place,
// so no other user can ever connect to it. A socket at PATH that no process
// answers on is replaced, anything else never. Closing the listener removes the
// socket. PATH's directory is created (mode 0755) if missing.
func Listen(addr string, opts Options) (net.Listener, error) {
	network, rest, _ := strings.Cut(addr, ":")
	switch {
	case rest == "":
	case network == "unix":
		return listenUnix(rest, opts)
	case network == "tcp":
		return listenTCP(rest, opts.AllowRemote)
	}
	return nil, fmt.Errorf("%w: listen %q: want unix:PATH or tcp:HOST:PORT", ErrConfig, addr)
}

func listenTCP(hostport string, allowRemote bool) (net.Listener, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("%w: listen tcp:%s: %w", ErrConfig, hostport, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); !allowRemote && (ip == nil || !ip.IsLoopback()) {
		if host == "" {
			host = "all interfaces"
		}
		return nil, fmt.Errorf("%w: listen tcp:%s: %s is not a loopback address; the daemon serves this machine only unless remote callers are allowed (--allow-remote)", ErrConfig, hostport, host)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return nil, fmt.Errorf("%w: listen tcp:%s: port %q: want a number from 0 to 65535", ErrConfig, hostport, port)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("listen tcp:%s: %w", hostport, err)
	}
	return ln, nil
}

const maxUnixPath = 107 // Linux's sun_path is 108 bytes with its NUL

func listenUnix(path string, opts Options) (net.Listener, error) {
	fail := func(err error) (net.Listener, error) { return nil, fmt.Errorf("listen unix:%s: %w", path, err) }
	bad := func(format string, args ...any) (net.Listener, error) {
		return fail(fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...)))
	}
	path = filepath.Clean(path)
	if len(path) > maxUnixPath {
		return bad("the path is %d bytes; a unix socket path is at most %d", len(path), maxUnixPath)
	}
	mode, gid := os.FileMode(0o600), -1
	if g := opts.SocketGroup; g != "" {
		id, err := LookupID(g, false)
		if err != nil {
			return bad("socket group: %v", err)
		}
		gid, mode = int(id), 0o660
	}
	if m := opts.SocketMode; m != 0 {
		if m&^os.ModePerm != 0 || m&0o111 != 0 {
			return bad("socket mode %#o: want permission bits without execute bits, such as 0660 or 0666", m)
		}
		mode = m
	}
	dir := filepath.Dir(path)
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSocket == 0 {
		return bad("%s exists and is not a socket; choose another path", path)
	}
	tmp, err := "", os.MkdirAll(dir, 0o755)
	if err == nil {
		err = removeStale(path)
	}
	if err == nil {
		tmp, err = os.MkdirTemp(dir, ".")
	}
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)
	tmpPath := filepath.Join(tmp, "s")
	if len(tmpPath) > maxUnixPath {
		tmpPath = path // bound in place, under a umask of 0177
	}
	umaskMu.Lock()
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmpPath, Net: "unix"})
	syscall.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		return fail(err)
	}
	ln.SetUnlinkOnClose(false)
	err = os.Chmod(tmpPath, mode)
	if err == nil && gid >= 0 {
		if err = os.Lchown(tmpPath, -1, gid); err != nil {
			err = fmt.Errorf("set the socket's group: %w", err)
		}
	}
	if err == nil && tmpPath != path {
		err = os.Rename(tmpPath, path)
	}
	var fi fs.FileInfo
	if err == nil {
		fi, err = os.Lstat(path)
	}
	if err != nil {
		ln.Close()
		return fail(err)
	}
	return &unixListener{UnixListener: ln, path: path, fi: fi}, nil
}

var umaskMu sync.Mutex // serialises the package's umask changes

type unixListener struct { // removes its socket file on Close, if it is still its own
	*net.UnixListener
	path string
	fi   fs.FileInfo
	once sync.Once
}

// Addr returns the socket's final path, not the one it was bound to.
func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

// Close closes the listener and removes the socket file.
func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, e := os.Lstat(l.path); e == nil && os.SameFile(fi, l.fi) {
			os.Remove(l.path)
		}
	})
	return err
}

// removeStale removes a socket at path that nobody listens on.
func removeStale(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another process listens on %s (is mp-hsm serve already running?): %w", path, syscall.EADDRINUSE)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s exists and cannot be checked: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the stale socket: %w", err)
	}
	return nil
}

// OpenToAll reports whether every local user may connect to the unix socket at
// path, and describes its mode: an abstract socket, or one that cannot be
// examined, is taken as open; one whose file is gone is not.
func OpenToAll(path string) (string, bool) {
	if path == "" || path[0] == '@' || path[0] == 0 {
		return "an abstract socket, without permissions", true
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "removed", false
	}
	if err != nil {
		return "its mode cannot be read: " + err.Error(), true
	}
	return fmt.Sprintf("mode %04o", fi.Mode().Perm()), fi.Mode().Perm()&0o002 != 0
}

// Activated returns the listening stream sockets systemd passed to this process
// (LISTEN_PID, LISTEN_FDS; sd_listen_fds(3)), or none, and unsets the variables
// so that child processes do not take them for theirs.
func Activated() ([]net.Listener, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || fds == "" {
		return nil, nil
	}
	defer func() {
		for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
			os.Unsetenv(v)
		}
	}()
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil // meant for another process
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 || n > 64 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q is not a count", fds)
	}
	const firstFD = 3 // SD_LISTEN_FDS_START
	var lns []net.Listener
	for fd := firstFD; fd < firstFD+n; fd++ {
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "systemd-socket-"+strconv.Itoa(fd))
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("socket activation: fd %d: %w", fd, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}
