package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/term"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
)

// pinFileError is a PIN file that cannot be used. It never holds the PIN.
type pinFileError struct {
	what   string // "PIN file" or "password file"
	path   string
	reason string
	err    error
}

func (e *pinFileError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.what, e.path, e.reason)
}
func (e *pinFileError) Unwrap() error { return e.err }

var errNoPIN = errors.New("no PIN given and no terminal to ask on: set MP_HSM_PIN or --pin-file (or use a PIN-pad reader)")

// readPINFileAs reads a PIN (or password) file by safefile.ReadSecret's
// rule, hsm.PINFile's too; what names it in messages. A file that group or
// others can read is used, with a warning.
func (e *env) readPINFileAs(what, path string) ([]byte, error) {
	pin, shared, err := safefile.ReadSecret(path, safefile.MaxPIN)
	if err != nil {
		reason := "cannot be read"
		var fe *safefile.Error
		if errors.As(err, &fe) {
			reason = fe.Reason
		}
		return nil, &pinFileError{what: what, path: path, reason: reason, err: err}
	}
	if shared {
		e.log.Warn("the "+what+" can be read by group or others; restrict it with chmod 600", "path", path)
	}
	return pin, nil
}

// pinSources returns the PIN source (--pin-file, MP_HSM_PIN, then the URI's
// fromURI) and the terminal prompt for when none is set; the PIN is read
// when the token asks for it. origin names the source for messages.
func (e *env) pinSources(pinFile string, uri *pkcs11uri.URI, fromURI hsm.PINSource) (explicit, prompt hsm.PINSource, origin string) {
	origin = "the terminal"
	switch {
	case pinFile != "":
		explicit, origin = func() ([]byte, error) { return e.readPINFileAs("PIN file", pinFile) }, "the PIN file "+pinFile
	case e.getenv("MP_HSM_PIN") != "":
		origin = "MP_HSM_PIN"
		explicit = func() ([]byte, error) {
			v := e.getenv("MP_HSM_PIN")
			if v == "" {
				return nil, errNoPIN
			}
			return []byte(v), nil
		}
	case uri != nil && uri.PINFile() != "":
		explicit, origin = func() ([]byte, error) { return e.readPINFileAs("PIN file", uri.PINFile()) }, "the --key URI's pin-source"
	default:
		explicit = fromURI
		if uri != nil && uri.PINSource != "" {
			origin = "the --key URI's pin-source"
		} else if uri != nil && uri.HasPIN() {
			origin = "the --key URI's pin-value"
		}
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
	return explicit, prompt, origin
}
