// Package safefile is the one way mp-hsm opens a file (TestOneOpener): a
// path can hold a FIFO that blocks forever, a device that never ends, a file
// far too large, a symbolic link where a file is written, or a config another
// user can edit. Read opens without blocking and takes only a regular file
// (following links, as Kubernetes and systemd mount secrets so) within its
// kind's limit; ReadPrivate adds that only the owner and root can change it;
// ReadSecret reads one PIN or secret; OpenAppend appends, never through a
// link; CheckRegular checks a path another library opens.
package safefile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// Limits for the kinds of file mp-hsm reads.
const (
	MaxPIN          = 1 << 10 // a PIN or password file: no token takes a longer PIN
	MaxSecret       = 4 << 10 // a client secret file
	MaxCertificates = 1 << 20 // a PEM file of certificates or a key
	MaxConfig       = 1 << 20 // mp-hsm serve --config
	MaxPKCS12       = 1 << 20 // a PKCS#12 file
)

// Causes an *Error wraps.
var (
	ErrNotRegular = errors.New("not a regular file")         // a FIFO, device, socket or directory
	ErrTooLarge   = errors.New("too large")                  // over its kind's limit
	ErrUnsafe     = errors.New("another user can change it") // a user other than the owner or root can write it
	ErrNotSecret  = errors.New("not a usable secret")        // empty, or holding a control character
)

// Error is a file that could not be read. It names the path and the reason, never the content.
type Error struct {
	Path   string
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Path + ": " + e.Reason }

// Unwrap returns the cause: one of this package's sentinels, or the error
// of the system call (fs.ErrNotExist, fs.ErrPermission, ...).
func (e *Error) Unwrap() error { return e.Err }

// Read returns the content of the regular file at path, at most max bytes.
// Use ReadPrivate instead for a file whose content mp-hsm trusts.
func Read(path string, max int64) ([]byte, error) {
	data, _, err := read(path, max)
	return data, err
}

// read is Read, also returning the open file's (not the path's) information.
func read(path string, max int64) ([]byte, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, openError(path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, openError(path, err)
	}
	if err := regular(path, fi); err != nil {
		return nil, nil, err
	}
	tooLarge := func() error {
		return &Error{Path: path, Err: ErrTooLarge, Reason: fmt.Sprintf("is larger than the %d bytes such a file can hold; is it the right file?", max)}
	}
	if fi.Size() > max {
		return nil, nil, tooLarge()
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, nil, openError(path, err)
	}
	if int64(len(data)) > max {
		clear(data)
		return nil, nil, tooLarge()
	}
	return data, fi, nil
}

// ReadPrivate reads path as Read does, for a file whose content mp-hsm
// trusts (config, PIN, secret): it is refused (ErrUnsafe, with the chmod or
// chown that fixes it) when group or others may write the file opened, or
// its owner is neither root nor the effective uid. The information returned
// tells who may read it (ReadableByOthers).
func ReadPrivate(path string, max int64) ([]byte, fs.FileInfo, error) {
	data, fi, err := read(path, max)
	if err != nil {
		return nil, nil, err
	}
	if err := private(path, fi); err != nil {
		clear(data)
		return nil, nil, err
	}
	return data, fi, nil
}

// ReadableByOthers reports whether fi's mode lets group or others read the file.
func ReadableByOthers(fi fs.FileInfo) bool { return fi.Mode().Perm()&0o044 != 0 }

// ReadSecret reads a PIN, password or secret file as ReadPrivate does, one
// trailing newline (or CRLF) trimmed. An empty file or one with another
// control character is ErrNotSecret, never quoted, so that no wrong PIN
// spends a try. shared reports that group or others can read it. The caller
// zeroes the secret after use.
func ReadSecret(path string, max int64) (secret []byte, shared bool, err error) {
	data, fi, err := ReadPrivate(path, max)
	if err != nil {
		return nil, false, err
	}
	defer clear(data)
	s := bytes.TrimSuffix(bytes.TrimSuffix(data, []byte("\n")), []byte("\r"))
	if len(s) == 0 {
		return nil, false, &Error{Path: path, Reason: "is empty", Err: ErrNotSecret}
	}
	if i := bytes.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }); i >= 0 {
		return nil, false, &Error{Path: path, Err: ErrNotSecret,
			Reason: fmt.Sprintf("holds a control character at byte %d (more than one line?): it must hold the value and at most one newline", i+1)}
	}
	return bytes.Clone(s), ReadableByOthers(fi), nil
}

// OpenAppend opens path to append to, as the audit log, creating it with
// perm if missing. It refuses a symbolic link (the file written is the one
// named), never blocks on a FIFO, and takes only a regular file.
func OpenAppend(path string, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, perm)
	switch {
	case errors.Is(err, syscall.ELOOP):
		return nil, &Error{Path: path, Reason: "is a symbolic link; give the path of the file itself", Err: ErrNotRegular}
	case errors.Is(err, syscall.ENXIO):
		return nil, &Error{Path: path, Reason: "is a FIFO; give a regular file", Err: ErrNotRegular}
	case err != nil:
		return nil, openError(path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, &Error{Path: path, Reason: "cannot be opened: " + err.Error(), Err: err}
	}
	if err := regular(path, fi); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// CheckRegular returns nil when path is a regular file (after following
// links), and otherwise an *Error saying what it is. It reads nothing.
func CheckRegular(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return openError(path, err)
	}
	return regular(path, fi)
}

func openError(path string, err error) error {
	reason := "cannot be read: " + err.Error()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		reason = "does not exist"
	case errors.Is(err, fs.ErrPermission):
		reason = "permission denied"
	}
	return &Error{Path: path, Reason: reason, Err: err}
}

func regular(path string, fi fs.FileInfo) error {
	m := fi.Mode()
	if m.IsRegular() {
		return nil
	}
	what := "not a regular file"
	switch {
	case m.IsDir():
		what = "a directory"
	case m&fs.ModeNamedPipe != 0:
		what = "a FIFO"
	case m&fs.ModeSocket != 0:
		what = "a socket"
	case m&fs.ModeDevice != 0 || m&fs.ModeCharDevice != 0:
		what = "a device"
	}
	return &Error{Path: path, Reason: fmt.Sprintf("is %s; give a regular file", what), Err: ErrNotRegular}
}

func private(path string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		writers := map[fs.FileMode]string{0o020: "its group", 0o002: "others", 0o022: "group and others"}[perm&0o022]
		return &Error{Path: path, Err: ErrUnsafe, Reason: fmt.Sprintf(
			"can be changed by %s (mode %04o), and mp-hsm trusts what it holds; make it writable by its owner only: chmod go-w %s",
			writers, perm, path)}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if euid := uint32(os.Geteuid()); ok && st.Uid != 0 && st.Uid != euid {
		return &Error{Path: path, Err: ErrUnsafe, Reason: fmt.Sprintf(
			"is owned by %s, who is neither root nor %s that mp-hsm runs as, and could change it; give it to one of them: chown %s %s",
			userName(st.Uid), userName(euid), chownUser(euid), path)}
	}
	return nil
}

// userName names a uid for a message: "user NAME (uid N)", or "uid N".
func userName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if name := chownUser(uid); name != id {
		return "user " + name + " (uid " + id + ")"
	}
	return "uid " + id
}

// chownUser is the user to give to chown for uid: its name, or the number.
func chownUser(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil && u.Username != "" {
		return u.Username
	}
	return id
}
