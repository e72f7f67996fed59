package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/mp-hsm/mp-hsm/hsm"
)

// pinFileError is a PIN file that cannot be used. It never holds the PIN.
type pinFileError struct {
	path   string
	reason string
	err    error
}

func (e *pinFileError) Error() string {
	return fmt.Sprintf("PIN file %s: %s", e.path, e.reason)
}
func (e *pinFileError) Unwrap() error { return e.err }

var errNoPIN = errors.New("no PIN given and no terminal to ask on: set MP_HSM_PIN or --pin-file (or use a PIN-pad reader)")

// readPINFile reads a PIN file, trimming one trailing newline. An empty or
// unreadable file is an error, never an empty PIN that would spend a login
// attempt. A file that group or others can read is used, with a warning.
func (e *env) readPINFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		reason := "cannot be read: " + err.Error()
		if errors.Is(err, fs.ErrNotExist) {
			reason = "does not exist"
		}
		return nil, &pinFileError{path: path, reason: reason, err: err}
	}
	if st.IsDir() {
		return nil, &pinFileError{path: path, reason: "is a directory"}
	}
	if st.Mode().Perm()&0o077 != 0 {
		e.log.Warn("the PIN file can be read by group or others; restrict it with chmod 600", "path", path, "mode", st.Mode().Perm().String())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &pinFileError{path: path, reason: "cannot be read: " + err.Error(), err: err}
	}
	pin := data
	if bytes.HasSuffix(pin, []byte("\n")) {
		pin = pin[:len(pin)-1]
		if bytes.HasSuffix(pin, []byte("\r")) {
			pin = pin[:len(pin)-1]
		}
	}
	if len(pin) == 0 {
		clear(data)
		return nil, &pinFileError{path: path, reason: "is empty"}
	}
	out := append([]byte(nil), pin...)
	clear(data)
	return out, nil
}

// pinOrigin names the PIN source pinSources chooses, for messages.
func (e *env) pinOrigin(pinFile string, uri *hsm.URI) string {
	switch {
	case pinFile != "":
		return "the PIN file " + pinFile
	case e.getenv("MP_HSM_PIN") != "":
		return "MP_HSM_PIN"
	case uri != nil && uri.PINSource != "":
		return "the --key URI's pin-source"
	case uri != nil && uri.HasPIN():
		return "the --key URI's pin-value"
	}
	return "the terminal"
}

// pinSources returns the PIN source from --pin-file, MP_HSM_PIN or the URI's
// pin-source or pin-value, in that order, and the terminal prompt to use
// when none is set (nil when stdin is not a terminal). The PIN is read when
// the token asks for it, not before.
func (e *env) pinSources(pinFile string, uri *hsm.URI) (explicit hsm.PINSource, prompt hsm.PINSource) {
	switch {
	case pinFile != "":
		explicit = func() ([]byte, error) { return e.readPINFile(pinFile) }
	case e.getenv("MP_HSM_PIN") != "":
		explicit = func() ([]byte, error) {
			v := e.getenv("MP_HSM_PIN")
			if v == "" {
				return nil, errNoPIN
			}
			return []byte(v), nil
		}
	case uri != nil && uri.PINSource != "":
		path := strings.TrimPrefix(uri.PINSource, "file:")
		explicit = func() ([]byte, error) { return e.readPINFile(path) }
	case uri != nil && uri.HasPIN():
		v := uri.PINValue
		explicit = func() ([]byte, error) { return []byte(v), nil }
	}
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		prompt = func() ([]byte, error) {
			fmt.Fprint(e.stderr, "PIN: ")
			pin, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(e.stderr)
			if err != nil {
				return nil, fmt.Errorf("reading the PIN from the terminal: %w", err)
			}
			if len(pin) == 0 {
				return nil, errNoPIN
			}
			return pin, nil
		}
	} else {
		prompt = func() ([]byte, error) { return nil, errNoPIN }
	}
	return explicit, prompt
}
