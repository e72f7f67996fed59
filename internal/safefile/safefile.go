// Package safefile is the one way mp-hsm opens a file (TestOneOpener), as a
// path can hold a FIFO that blocks forever, a device that never ends, a
// file far too large, a symbolic link where a file is written, or a config
// another user can edit. Read opens without blocking, takes only a
// regular file (following links, as Kubernetes and systemd mount secrets
// so) within its kind's limit; ReadPrivate adds that only the owner and
// root can change it; OpenAppend appends, never through a link; and
// CheckRegular checks a path another library opens.
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
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
	ErrNotRegular = errors.New("not a regular file") // a FIFO, device, socket or directory
	ErrTooLarge   = errors.New("too large")          // over its kind's limit
)

// Error is a file that could not be read. It names the path and the
// reason, never the content.
type Error struct {
	Path   string
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Path + ": " + e.Reason }

// Unwrap returns the cause: ErrNotRegular, ErrTooLarge, or the error of
// the system call (fs.ErrNotExist, fs.ErrPermission, ...).
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
		return nil, nil, &Error{Path: path, Reason: "cannot be read: " + err.Error(), Err: err}
	}
	if err := regular(path, fi); err != nil {
		return nil, nil, err
	}
	if fi.Size() > max {
		return nil, nil, tooLarge(path, max)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, nil, &Error{Path: path, Reason: "cannot be read: " + err.Error(), Err: err}
	}
	if int64(len(data)) > max {
		clear(data)
		return nil, nil, tooLarge(path, max)
	}
	return data, fi, nil
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

func tooLarge(path string, max int64) error {
	return &Error{Path: path, Reason: fmt.Sprintf("is larger than the %d bytes such a file can hold; is it the right file?", max), Err: ErrTooLarge}
}
