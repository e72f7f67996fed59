package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ListenOptions configure Listen.
type ListenOptions struct {
	// SocketGroup, if set, is the group (name or numeric id) that owns a
	// unix socket; the socket's mode is then 0660 instead of 0600, so
	// that members of the group may connect.
	SocketGroup string

	// SocketMode, if not zero, is a unix socket's mode (its permission
	// bits only, such as 0666 when the clients' users and groups decide
	// who is served), instead of 0600 or 0660.
	SocketMode os.FileMode

	// AllowRemote allows TCP addresses that are not loopback. If false,
	// only 127.0.0.0/8, ::1 and localhost are accepted.
	AllowRemote bool
}

// DefaultSocketPath returns where the daemon listens by default:
// /run/mp-hsm/mp-hsm.sock for root, and $XDG_RUNTIME_DIR/mp-hsm.sock for
// other users; "" when XDG_RUNTIME_DIR is unset for a user other than root.
func DefaultSocketPath() string {
	if os.Geteuid() == 0 {
		return "/run/mp-hsm/mp-hsm.sock"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "mp-hsm.sock")
	}
	return ""
}

// Listen opens a listener for addr, which is "unix:PATH" or
// "tcp:HOST:PORT" (HOST may be an IP address or localhost; port 0 chooses a
// free port).
//
// A unix socket is created with mode 0600 (0660 with opts.SocketGroup) from
// the start: it is made under a temporary name in a private directory,
// given its mode and group, and only then renamed into place, so no other
// user can ever connect to it. A socket already at PATH is removed if no
// process answers on it (left behind by a crash); if one answers, Listen
// fails. Anything at PATH that is not a socket is never removed. The
// socket is removed when the listener is closed. PATH's directory is
// created (mode 0755) if missing.
//
// A TCP address that is not loopback is refused unless opts.AllowRemote.
// A malformed or refused address gives an error matching ErrConfig.
func Listen(addr string, opts ListenOptions) (net.Listener, error) {
	network, rest, ok := strings.Cut(addr, ":")
	if !ok || rest == "" {
		return nil, fmt.Errorf("%w: listen %q: want unix:PATH or tcp:HOST:PORT", ErrConfig, addr)
	}
	switch network {
	case "unix":
		return listenUnix(rest, opts.SocketGroup, opts.SocketMode)
	case "tcp":
		return listenTCP(rest, opts.AllowRemote)
	}
	return nil, fmt.Errorf("%w: listen %q: want unix:PATH or tcp:HOST:PORT", ErrConfig, addr)
}

func listenTCP(hostport string, allowRemote bool) (net.Listener, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("%w: listen tcp:%s: %w", ErrConfig, hostport, err)
	}
	if !allowRemote {
		switch ip := net.ParseIP(host); {
		case host == "localhost":
			host = "127.0.0.1"
		case ip == nil || !ip.IsLoopback():
			if host == "" {
				host = "all interfaces"
			}
			return nil, fmt.Errorf("%w: listen tcp:%s: %s is not a loopback address; the daemon serves this machine only unless remote callers are allowed (--allow-remote)", ErrConfig, hostport, host)
		}
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		if _, err := net.LookupPort("tcp", port); err != nil {
			return nil, fmt.Errorf("%w: listen tcp:%s: port %q: want a number from 0 to 65535", ErrConfig, hostport, port)
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("listen tcp:%s: %w", hostport, err)
	}
	return ln, nil
}

// maxUnixPath is the longest path a unix socket can be bound to on Linux
// (sun_path is 108 bytes with its NUL).
const maxUnixPath = 107

func listenUnix(path, group string, setMode os.FileMode) (net.Listener, error) {
	fail := func(err error) (net.Listener, error) {
		return nil, fmt.Errorf("listen unix:%s: %w", path, err)
	}
	bad := func(format string, args ...any) (net.Listener, error) {
		return nil, fmt.Errorf("%w: listen unix:%s: %s", ErrConfig, path, fmt.Sprintf(format, args...))
	}
	if path == "" {
		return bad("no path")
	}
	path = filepath.Clean(path)
	if len(path) > maxUnixPath {
		return bad("the path is %d bytes; a unix socket path is at most %d", len(path), maxUnixPath)
	}
	mode := os.FileMode(0o600)
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return bad("%v", err)
		}
		gid, mode = g, 0o660
	}
	if setMode != 0 {
		if setMode&^os.ModePerm != 0 || setMode&0o111 != 0 {
			return bad("socket mode %#o: want permission bits without execute bits, such as 0660 or 0666", setMode)
		}
		mode = setMode
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSocket == 0 {
		return bad("%s exists and is not a socket; choose another path", path)
	}
	if err := removeStale(path); err != nil {
		return fail(err)
	}
	// Bind in a private directory, set mode and group, then rename into
	// place: the socket is never reachable with a wider mode. The private
	// directory's name is short (".NNNNNNNNN/s"); when even that would
	// make the path too long, the socket is bound in place under a umask
	// that leaves it to its owner alone until its mode is set.
	tmp, err := os.MkdirTemp(dir, ".")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)
	tmpPath := filepath.Join(tmp, "s")
	if len(tmpPath) > maxUnixPath {
		tmpPath = path
	}
	ln, err := bindPrivate(tmpPath)
	if err != nil {
		return fail(err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmpPath, mode); err != nil {
		ln.Close()
		return fail(err)
	}
	if gid >= 0 {
		if err := os.Lchown(tmpPath, -1, gid); err != nil {
			ln.Close()
			return fail(fmt.Errorf("set the socket's group: %w", err))
		}
	}
	if tmpPath != path {
		if err := os.Rename(tmpPath, path); err != nil {
			ln.Close()
			return fail(err)
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return fail(err)
	}
	return &unixListener{UnixListener: ln, path: path, fi: fi}, nil
}

// unixListener removes its socket file on Close, if it is still its own.
type unixListener struct {
	*net.UnixListener
	path string
	fi   fs.FileInfo
	once sync.Once
}

// Addr returns the socket's final path (not the temporary one it was bound
// to).
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

// bindPrivate binds a unix socket at path, created with mode 0600 (the
// umask is narrowed around the bind), ready for the caller's chmod.
func bindPrivate(path string) (*net.UnixListener, error) {
	umaskMu.Lock()
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	umaskMu.Unlock()
	return ln, err
}

// umaskMu serialises the daemon's own umask changes.
var umaskMu sync.Mutex

// removeStale removes a socket at path that nobody listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; not removing it", path)
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

func lookupGroup(name string) (int, error) {
	if id, err := strconv.Atoi(name); err == nil && id >= 0 {
		return id, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("socket group: %w", err)
	}
	id, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("socket group %q: gid %q is not a number", name, g.Gid)
	}
	return id, nil
}

// ActivationListeners returns the listeners systemd passed to this process
// by socket activation (LISTEN_PID, LISTEN_FDS; sd_listen_fds(3)), or none
// when it passed none. It unsets the variables, so that child processes do
// not take the sockets for theirs. Each socket must be a listening stream
// socket (unix or TCP).
func ActivationListeners() ([]net.Listener, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || fds == "" {
		return nil, nil
	}
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
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

// checkListener refuses a listener that st would open to more callers
// than it means to serve: a TCP listener without a client secret, or on an
// address that is not loopback unless remote callers are allowed; a unix
// socket that every local user can connect to, while a client admits any
// caller on it (a Config without Clients). Serve and Reload call it.
func (st *settings) checkListener(ln net.Listener) error {
	addr := ln.Addr()
	switch a := addr.(type) {
	case *net.UnixAddr:
		if !slices.ContainsFunc(st.clients, func(c *client) bool { return c.anyUnix }) {
			return nil
		}
		if mode, open := socketOpenToAll(a.Name); open {
			return fmt.Errorf("%w: unix socket %s (%s) lets every local user connect, and without clients (Config.Clients, [[client]] tables) nothing else decides who gets tokens: add clients with users or groups, or narrow the socket (mode 0600, or 0660 with a socket group)", ErrConfig, a.Name, mode)
		}
		return nil
	case *net.TCPAddr:
		if !st.anySecret() {
			return fmt.Errorf("%w: TCP listener %s: callers on TCP must authenticate, and no client secret is configured (--client-secret-file)", ErrConfig, addr)
		}
		if !st.cfg.AllowRemote && !a.IP.IsLoopback() {
			return fmt.Errorf("%w: TCP listener %s is not on a loopback address; allow it explicitly (--allow-remote)", ErrConfig, addr)
		}
		return nil
	}
	return fmt.Errorf("%w: listener on %s %s: only unix and tcp are supported", ErrConfig, addr.Network(), addr)
}

// socketOpenToAll reports whether every local user may connect to the unix
// socket at path (connecting needs write permission), and describes its
// mode: an abstract socket (no file) has no permissions at all. A socket
// whose file is gone cannot be reached; one whose file cannot be examined
// otherwise is taken as open.
func socketOpenToAll(path string) (string, bool) {
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
	perm := fi.Mode().Perm()
	return fmt.Sprintf("mode %04o", perm), perm&0o002 != 0
}
