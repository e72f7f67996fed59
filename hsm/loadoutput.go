package hsm

import (
	"errors"
	"strings"

	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// OpenOptions are the choices of OpenWith; the zero value is Open's.
type OpenOptions struct {
	// HoldLoadOutput holds back what modules write on standard error while
	// the module loads and initialises (dlopen and C_Initialize), instead of
	// letting it through. p11-kit's proxy loads every module registered with
	// p11-kit, and one without its device (tpm2-pkcs11 on a machine without
	// a TPM) writes a dozen lines of errors there, though the token asked
	// for is in another module. What was held is shown where it can explain
	// something: in a SelectionError when no token matches (ModuleOutput),
	// and by Module.LoadOutput. While it is held, everything the process
	// writes to file descriptor 2 is held with it, so a program should ask
	// for it only while nothing else writes there (a command line tool at
	// start, not a daemon that logs). It holds only on Linux, and only when
	// this call loads the module; elsewhere it does nothing.
	HoldLoadOutput bool
}

// maxLoadOutput bounds what is kept of a module's output on loading.
const maxLoadOutput = 8 << 10

// LoadOutput returns what the module and the modules it loaded wrote on
// standard error while this process loaded it, when OpenWith held it back
// (HoldLoadOutput), at most 8 KiB; "" otherwise.
func (m *Module) LoadOutput() string {
	if m.lib == nil {
		return ""
	}
	return m.lib.loadOutput
}

// withLoadOutput adds what the module wrote on loading to a selection error
// that found no token: it may say why (a module that could not reach its
// device).
func (m *Module) withLoadOutput(err error) error {
	var se *SelectionError
	out := m.LoadOutput()
	if out == "" || !errors.As(err, &se) {
		return err
	}
	switch se.Kind {
	case tokenerr.ErrTokenNotFound, tokenerr.ErrNoToken, tokenerr.ErrSlotNotFound:
		c := *se
		c.ModuleOutput = out
		return &c
	}
	return err
}

// trimLoadOutput returns out without blank lines at its ends, cut at
// maxLoadOutput bytes.
func trimLoadOutput(out []byte) string {
	s := strings.Trim(string(out), "\r\n")
	if len(s) > maxLoadOutput {
		s = s[:maxLoadOutput] + "\n[... cut at 8 KiB]"
	}
	return s
}
