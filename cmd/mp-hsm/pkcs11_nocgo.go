//go:build !cgo

package main

import (
	"context"
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/signer"
)

// This file stands in for the *_cgo.go files in a build without cgo
// (CGO_ENABLED=0): PKCS#11 needs cgo, so everything that would open a
// module fails at once with errNoCgo, a usage error (exit 2): nothing is
// wrong with the token, the command asked this binary for what it cannot
// do. Everything else works: --p12 keys, emulate, inspect, completion.

// errNoCgo says why a command that needs a token cannot run here.
var errNoCgo = errors.New("this mp-hsm was built without cgo: PKCS#11 tokens need a cgo build (CGO_ENABLED=1); --p12 works")

// openToken refuses: see errNoCgo.
func (e *env) openToken(*cli.Context) (keySigner, error) { return nil, usageErr(errNoCgo) }

// openTokenKey refuses: see errNoCgo.
func (e *env) openTokenKey(*cli.Context, []byte, string) (keySigner, error) {
	return nil, usageErr(errNoCgo)
}

// warnAlwaysAuthenticate does nothing: without cgo no key is on a token.
func (e *env) warnAlwaysAuthenticate(signer.Signer) {}

// list refuses: see errNoCgo.
func (e *env) list(*cli.Context) error { return usageErr(errNoCgo) }

// tokenOpener refuses: see errNoCgo.
func (e *env) tokenOpener(*cli.Context) (func(context.Context) (signer.Signer, error), func(error) error, error) {
	return nil, nil, usageErr(errNoCgo)
}

// clientKeyOpener refuses: see errNoCgo.
func (e *env) clientKeyOpener(*cli.Context, []byte, string) (func(context.Context, signer.Signer) (signer.Signer, error), error) {
	return nil, usageErr(errNoCgo)
}

// doctorKey returns a module check that fails with errNoCgo; the checks
// of the key and certificate after it are skipped.
func (e *env) doctorKey(*cli.Context) doctor.KeyFinder { return noCgoCheck{} }

// noCgoCheck is the doctor's module check in a build without cgo.
type noCgoCheck struct{}

func (noCgoCheck) FindKey(_ context.Context, report func(doctor.Result)) doctor.FoundKey {
	report(doctor.Failed("module", doctor.ClassUsage, usageErr(errNoCgo),
		"build mp-hsm with CGO_ENABLED=1 (and a C compiler) to use a smart card or HSM, or give --p12 FILE"))
	return doctor.FoundKey{}
}

func (noCgoCheck) Close() error { return nil }

// keyGenerate refuses: see errNoCgo.
func (e *env) keyGenerate(*cli.Context) error { return usageErr(errNoCgo) }

// keyImportCert refuses: see errNoCgo.
func (e *env) keyImportCert(*cli.Context) error { return usageErr(errNoCgo) }

// adminRotate refuses: see errNoCgo.
func (e *env) adminRotate(*cli.Context) error { return usageErr(errNoCgo) }

// moduleOutputOf: without cgo no module is loaded, so none wrote anything.
func moduleOutputOf(error) string { return "" }
