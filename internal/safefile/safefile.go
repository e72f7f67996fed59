// Package safefile is the one way mp-hsm opens a file: every file it reads
// (a config, a PIN, a secret, a certificate chain, a PKCS#12 file, a
// certificate to import, a JWK to register) and the audit log it appends
// to. A path can hold surprises: a FIFO that blocks the open or the read
// forever, a device such as /dev/zero that never ends, a file far larger
// than its kind can be, a symbolic link where a file is written, or a
// config that another user can edit.
//
// Read opens a file with O_NONBLOCK, so that opening a FIFO does not wait
// for a writer, and then it must be a regular file (symbolic links are
// followed: secrets mounted by Kubernetes or systemd credentials are links)
// no larger than the limit given for its kind. It is read to its end, and
// a file that grew past the limit while being read is refused too.
// ReadPrivate adds, for a file whose content mp-hsm trusts (config, PIN,
// secret), that no user but its owner and root can change it. OpenAppend
// opens a file to append to (never through a symbolic link), and
// CheckRegular checks a path that another library opens (a PKCS#11
// module). Code outside this package does not call os.Open, os.OpenFile or
// os.ReadFile (TestOneOpener).
package safefile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Limits for the kinds of file mp-hsm reads.
const (
	// MaxPIN bounds a PIN or password file: PKCS#11 PINs are short, and
	// no token takes one of more than a few hundred bytes.
	MaxPIN = 1 << 10
	// MaxSecret bounds a client secret file.
	MaxSecret = 4 << 10
	// MaxCertificates bounds a PEM file of certificates or a key.
	MaxCertificates = 1 << 20
	// MaxConfig bounds a configuration file (mp-hsm serve --config).
	MaxConfig = 1 << 20
	// MaxPKCS12 bounds a PKCS#12 file.
	MaxPKCS12 = 1 << 20
)

// ErrNotRegular is wrapped by the error for a path that is not a regular
// file (a FIFO, a device, a socket or a directory).
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is wrapped by the error for a file over its limit.
var ErrTooLarge = errors.New("too large")

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

// ErrNotSecret is wrapped by the error ReadSecret returns for a file whose
// content cannot be a secret: empty, or holding a control character.
var ErrNotSecret = errors.New("not a usable secret")

// Read returns the content of the regular file at path, at most max bytes.
// Use it for what anyone may give mp-hsm to read (a certificate chain, a
// PKCS#12 file, a certificate to import, a JWK); use ReadPrivate for a
// file whose content decides what mp-hsm does or proves who it is.
func Read(path string, max int64) ([]byte, error) {
	data, _, err := read(path, max)
	return data, err
}

// ReadSecret reads a PIN, password or secret file as ReadPrivate does (a
// regular file of at most max bytes, MaxPIN or MaxSecret, that no other
// user can change), with one trailing newline (or CRLF) trimmed. A file
// that is empty after that, or that holds another control character (a
// second line, a NUL), is an error wrapping ErrNotSecret, never a secret
// that would spend a PIN try; the error never quotes the content. fi is
// the file's information, for ReadableByOthers. The bytes read are zeroed
// but for the secret returned, which the caller zeroes after use.
func ReadSecret(path string, max int64) (secret []byte, fi fs.FileInfo, err error) {
	data, fi, err := ReadPrivate(path, max)
	if err != nil {
		return nil, nil, err
	}
	defer clear(data)
	s := bytes.TrimSuffix(data, []byte("\n"))
	s = bytes.TrimSuffix(s, []byte("\r"))
	if len(s) == 0 {
		return nil, nil, &Error{Path: path, Reason: "is empty", Err: ErrNotSecret}
	}
	for i, c := range s {
		if c < 0x20 || c == 0x7f {
			return nil, nil, &Error{Path: path, Err: ErrNotSecret,
				Reason: fmt.Sprintf("holds a control character at byte %d (more than one line?): it must hold the value and at most one newline", i+1)}
		}
	}
	return bytes.Clone(s), fi, nil
}

// read opens path without blocking, checks that it is a regular file
// within max bytes and reads it; it returns the file's information as the
// open file (not the path) has it.
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
