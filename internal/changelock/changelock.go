//go:build unix

// Package changelock is the lock that every mp-hsm process takes before a
// multi-step change (key generate, key import-cert, admin keys
// add|remove|rotate): an exclusive flock(2) on one file per thing changed
// (a token, a client's key set at an API). Two changes of the same thing
// never interleave; a process that dies releases its lock with its file
// descriptors.
//
// The lock files live in Dir: $MP_HSM_LOCK_DIR if set, else
// $XDG_RUNTIME_DIR/mp-hsm, else /run/lock/mp-hsm for root, else
// $TMPDIR/mp-hsm-UID. The directory is made 0700 and must belong to the
// user, so the lock is per user: processes of two users changing the same
// token do not see each other's locks unless MP_HSM_LOCK_DIR names a
// directory they share.
//
// A change of a token takes two locks, in this order: the module's
// (AcquireModule), before the PKCS#11 module is loaded, and then the
// token's, once the token is found, both held until the change ends. The
// token's alone comes too late: a module may read its store only when it
// is loaded, and SoftHSM2 rewrites a token's file in place at every login
// (it truncates token.object, then takes its file lock and writes). A
// second process that loads the module while the first logs in can read
// the file empty or half written, and then sees no such token ("token not
// found") or a token whose PIN is not initialised (CKR_USER_PIN_NOT_INITIALIZED
// at its login). Retrying the lookup would not cure the second, and a
// login is never retried; so the second process waits, before it loads
// the module, for the first to finish, then finds the token as the first
// left it and is refused by what it finds (a label that is taken). The
// module lock is keyed by the module's resolved path, so changes of other
// tokens through the same module wait too: changes are rare and short.
// Processes that change no token (list, token, serve) take no lock: one
// that logs in while a change loads the module can still upset it so,
// and the lock only keeps mp-hsm's changes apart from each other.
package changelock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Lock is a held lock; Unlock releases it.
type Lock struct {
	f *os.File
}

// poll is how often Acquire tries again while another process holds the
// lock.
const poll = 50 * time.Millisecond

// Dir returns the directory of the lock files (see the package doc).
func Dir() string {
	if d := os.Getenv("MP_HSM_LOCK_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "mp-hsm")
	}
	if os.Geteuid() == 0 {
		return "/run/lock/mp-hsm"
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("mp-hsm-%d", os.Geteuid()))
}

// Acquire takes the lock named by kind ("token", "key-set") and the parts
// that identify what is changed (a token's manufacturer, model and serial;
// an API's URL and a client id). While another process holds it, Acquire
// waits until ctx ends, then returns an error that says who to wait for.
func Acquire(ctx context.Context, kind string, parts ...string) (*Lock, error) {
	dir := Dir()
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	path := filepath.Join(dir, kind+"-"+hex.EncodeToString(h[:12])+".lock")
	// Read-only (flock needs no more) and readable by all, so that users sharing
	// MP_HSM_LOCK_DIR can open each other's lock files; created apart, since
	// O_CREAT on another user's file in a sticky directory is refused
	// (fs.protected_regular).
	const flags = os.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	f, err := os.OpenFile(path, flags, 0)
	if errors.Is(err, os.ErrNotExist) {
		if f, err = os.OpenFile(path, flags|os.O_CREATE|os.O_EXCL, 0o644); err == nil {
			_ = f.Chmod(0o644) // whatever the umask
		} else if errors.Is(err, os.ErrExist) {
			f, err = os.OpenFile(path, flags, 0) // made by another process meanwhile
		}
	}
	if err != nil {
		return nil, fmt.Errorf("change lock %s: %w (set MP_HSM_LOCK_DIR to a directory of yours)", path, err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("change lock %s is not a regular file: remove it", path)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &Lock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("change lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("another mp-hsm process is changing the same %s (lock %s): try again when it has finished: %w", what(kind), path, context.Cause(ctx))
		case <-time.After(poll):
		}
	}
}

// AcquireModule takes the lock of the PKCS#11 module at path (symbolic
// links resolved, so two names of one file share it), waiting as Acquire
// does. Take it before the module is loaded and hold it, with the token's
// lock, until the change ends (see the package doc).
func AcquireModule(ctx context.Context, path string) (*Lock, error) {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	return Acquire(ctx, "module", path)
}

// Unlock releases the lock. It may be called more than once.
func (l *Lock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
}

// what names the thing a lock of kind guards, for the error.
func what(kind string) string {
	if kind == "module" {
		return "PKCS#11 module (a token it serves)"
	}
	return kind
}

// ensureDir makes dir (mode 0700) if it is missing and refuses one that is
// not a directory of ours (a symlink, another user's) or that others may
// write to.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("change lock directory: %w (set MP_HSM_LOCK_DIR to a directory of yours)", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("change lock directory: %w", err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("change lock directory %s is not a directory (a symlink?): remove it or set MP_HSM_LOCK_DIR", dir)
	case int(st.Uid) != os.Geteuid() && st.Uid != 0:
		return fmt.Errorf("change lock directory %s belongs to uid %d, not to you: set MP_HSM_LOCK_DIR", dir, st.Uid)
	case st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0:
		return fmt.Errorf("change lock directory %s is writable by others: chmod go-w %s", dir, dir)
	}
	return nil
}
