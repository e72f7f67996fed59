package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/doctor/tokencheck"
)

// doctorKey returns the doctor's checks of the key the key flags choose,
// or, when the flags do not resolve, a module check that fails saying why.
func (e *env) doctorKey(c *cli.Context) doctor.KeyFinder {
	ks, err := e.resolveKey(c)
	if err != nil {
		hint := "fix the flag named; see mp-hsm --help"
		switch {
		case errors.Is(err, errNoCgo):
			hint = "build mp-hsm with CGO_ENABLED=1 (and a C compiler) to use a smart card or HSM, or give --p12 FILE"
		case exitCode(err) != exitUsage:
			hint = tokencheck.ModuleHint
		}
		return tokencheck.Failed(err, hint)
	}
	// doctor diagnoses: what modules write while they load is part of
	// the diagnosis, so it goes through, not held back as for token.
	ks.cfg.ModuleOptions.HoldLoadOutput = false
	return &tokencheck.Checks{
		Config:        ks.cfg,
		DefaultModule: ks.moduleSource == "default",
		Interactive:   isTerminal(e.stdin),
		OnPINPad:      func() { fmt.Fprintln(e.stderr, "mp-hsm doctor: enter the PIN on the reader's PIN pad") },
		Explain:       e.explainKeyError,
	}
}
