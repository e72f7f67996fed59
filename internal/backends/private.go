//go:build cgo

package backends

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
)

// privateEnv tells the test binary that Private started it in a new mount
// namespace, where it makes its mounts.
const privateEnv = "MP_HSM_PRIVATE_MOUNTS"

// privateMarker exists only inside a namespace that Private set up (in
// its /run), so that test binaries that such a process starts again, with
// whatever environment, run in it as they are.
const privateMarker = "/run/mp-hsm-private-mounts"

// privateMounts are the paths of opencryptoki's machine-wide state that
// Private replaces with empty tmpfs mounts: the token stores, pkcsslotd's
// socket and pid file (/var/run is /run) with the lock directories in
// /run/lock, and the shared memory (/dev/shm/var.lib.opencryptoki.*).
// The directories (not the files) of the first two are made again in the
// empty ones, with their owners and modes. /etc/opencryptoki is read, never
// written, and stays.
var privateMounts = []struct {
	path     string
	mode     string // of the tmpfs root
	copyDirs []string
}{
	{"/var/lib/opencryptoki", "", []string{"/var/lib/opencryptoki"}},
	{"/run", "0755", []string{"/run/lock"}},
	{"/dev/shm", "1777", nil},
}

// Private runs the test binary again, with the same arguments, in a mount
// namespace of its own in which opencryptoki's machine-wide state (see
// privateMounts) is empty, and returns its exit code with ran true: the
// backend then starts its own pkcsslotd on its own soft token, and the
// machine's, whoever's it is, is neither touched nor needed. Every process
// the tests start, mp-hsm and the test binary itself included, sees the
// same namespace, as the clients of pkcsslotd must.
//
// In the process it started, and when the test binary cannot have a
// namespace (not root) or runs in one already, Private returns ran false:
// run the tests. Call it first in TestMain:
//
//	if code, ran := backends.Private(); ran {
//		os.Exit(code)
//	}
func Private() (code int, ran bool) {
	if os.Getenv(privateEnv) != "" {
		os.Unsetenv(privateEnv)
		if err := mountPrivate(); err != nil {
			fmt.Fprintln(os.Stderr, "backends: a private mount namespace for opencryptoki:", err)
			return 1, true
		}
		return 0, false
	}
	if _, err := os.Stat(privateMarker); err == nil || os.Geteuid() != 0 {
		return 0, false
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), privateEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "backends: starting the tests in a private mount namespace:", err)
		return 1, true
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err := cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, true
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode(), true
	default:
		fmt.Fprintln(os.Stderr, "backends: the tests in a private mount namespace:", err)
		return 1, true
	}
}

// dirInfo is a directory to make again in an empty mount.
type dirInfo struct {
	path     string
	mode     fs.FileMode
	uid, gid int
}

// mountPrivate mounts an empty tmpfs on each of privateMounts, in the
// namespace Private made (exec.Cmd's Unshareflags made its mounts private,
// so nothing propagates to the machine's), and writes privateMarker.
func mountPrivate() error {
	for _, m := range privateMounts {
		st, err := os.Stat(m.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // opencryptoki is not installed
		}
		if err != nil {
			return err
		}
		var dirs []dirInfo
		for _, root := range m.copyDirs {
			err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.IsDir() || p == m.path {
					return nil
				}
				info, err := d.Info()
				if err != nil {
					return nil
				}
				sys := info.Sys().(*syscall.Stat_t)
				dirs = append(dirs, dirInfo{p, info.Mode(), int(sys.Uid), int(sys.Gid)})
				return nil
			})
			if err != nil {
				return err
			}
		}
		opts := "mode=" + m.mode
		if m.mode == "" {
			opts = fmt.Sprintf("mode=%o", st.Mode().Perm())
		}
		if err := syscall.Mount("tmpfs", m.path, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", m.path, err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if err := os.Chown(m.path, int(sys.Uid), int(sys.Gid)); err != nil {
			return err
		}
		for _, d := range dirs {
			if err := os.Mkdir(d.path, 0o700); err != nil {
				return err
			}
			// Chown before Chmod: chown clears setgid and sticky bits.
			if err := errors.Join(os.Chown(d.path, d.uid, d.gid), os.Chmod(d.path, d.mode.Perm()|d.mode&(fs.ModeSticky|fs.ModeSetgid))); err != nil {
				return err
			}
		}
	}
	return os.WriteFile(privateMarker, nil, 0o644)
}
