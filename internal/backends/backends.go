//go:build cgo

// Package backends starts, for tests, the PKCS#11 implementations that the
// conformance suite (internal/conformance) runs on: SoftHSM2 alone, through
// p11-kit's proxy, through OpenSC's pkcs11-spy and behind p11-kit's RPC (a
// network HSM); tpm2-pkcs11 on swtpm behind tpm2-abrmd; opencryptoki's soft
// token behind pkcsslotd; a smart card through OpenSC and a pcscd of its
// own (StartCard). Each Start
// function starts what its backend needs as child processes (bound to
// loopback or unix sockets in a directory of the caller's), initialises one
// token and returns a Running, whose Stop ends those processes by pid.
//
// The functions take no testing.T, so that a TestMain can start a backend
// once for a whole package.
package backends

import (
	"errors"
	"strings"
)

// Running is a started backend with one initialised, empty token.
type Running struct {
	// Name is the backend's name in test names and docs/COMPATIBILITY.md:
	// "softhsm2", "p11-kit-proxy", "pkcs11-spy", "p11-kit-rpc",
	// "tpm2-pkcs11", "opencryptoki", "card".
	Name string
	// Version names the Debian packages it runs on, with their versions:
	// "libtpm2-pkcs11-1 1.9.0-0.1, swtpm 0.7.1-1.3".
	Version string
	// Module is the path of the PKCS#11 module to load.
	Module string
	// Env holds the variables (KEY=VALUE) that a process loading Module
	// needs besides its own: a TCTI, a store directory, a D-Bus address.
	Env []string
	// Label and Serial name the token; PIN and SOPIN are its PINs.
	Label, Serial string
	PIN, SOPIN    string
	// Notes are what a user of this backend must know (the TPM's
	// dictionary-attack lockout, compiled-in paths), for
	// docs/COMPATIBILITY.md.
	Notes []string
	// Card is set on the smart card of StartCard, whose keys come with it
	// and which the fault tests pull and slow down; nil on the others.
	Card *Card
	// RPC is the network HSM of the p11-kit-rpc backend, which tests
	// stop, start and slow down; nil for the other backends.
	RPC *RPCServer

	stops []func() error // run in reverse order by Stop

	// p11 is GenerateKey's and PutCertificate's own handle on Module.
	p11 provisioner
}

// onStop adds f to what Stop runs, before everything added earlier.
func (r *Running) onStop(f func() error) { r.stops = append(r.stops, f) }

// Stop ends the backend's processes and removes what it made, in the
// reverse order of their start. It may be called more than once.
func (r *Running) Stop() error {
	var errs []error
	for i := len(r.stops) - 1; i >= 0; i-- {
		if err := r.stops[i](); err != nil {
			errs = append(errs, err)
		}
	}
	r.stops = nil
	return errors.Join(errs...)
}

// Getenv returns the value of key in r.Env, or "".
func (r *Running) Getenv(key string) string {
	for _, kv := range r.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
