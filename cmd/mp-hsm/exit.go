package main

import (
	"context"
	"errors"

	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// exitCode maps an error to the contract's exit codes.
func exitCode(err error) int {
	var ce *codedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, grant.ErrCertificateExpired):
		return exitToken
	case errors.Is(err, pkcs11uri.ErrInvalid),
		errors.Is(err, safefile.ErrUnsafe),
		errors.Is(err, grant.ErrInvalidRequest),
		errors.Is(err, grant.ErrInvalidConfig) && !errors.Is(err, grant.ErrEnvironmentMismatch):
		return exitUsage
	case errors.Is(err, grant.ErrRefused):
		return exitRefused
	case errors.Is(err, grant.ErrUnavailable), errors.Is(err, grant.ErrBadResponse),
		errors.Is(err, context.DeadlineExceeded):
		return exitUnavailable
	case isTokenProblem(err):
		return exitToken
	}
	return exitInternal
}

// isTokenProblem reports a module, token, key, PIN or certificate error; it
// needs no PKCS#11, as every hsm error matches a tokenerr sentinel.
func isTokenProblem(err error) bool {
	var pf *pinFileError
	return tokenerr.Kind(err) != nil || errors.As(err, &pf) ||
		errors.Is(err, signer.ErrKeyTooSmall) || errors.Is(err, signer.ErrCertificateMismatch) ||
		errors.Is(err, signer.ErrUnsupportedKey) || errors.Is(err, grant.ErrEnvironmentMismatch) ||
		errors.Is(err, errNoPIN)
}

// doctorExit returns a failed check's exit code: that of an error the
// command made from its flags, else the one of the check's class.
func doctorExit(r doctor.Result) int {
	var ce *codedError
	if errors.As(r.Err, &ce) {
		return ce.code
	}
	if code, ok := map[doctor.Class]int{doctor.ClassUsage: exitUsage, doctor.ClassToken: exitToken,
		doctor.ClassRefused: exitRefused, doctor.ClassUnavailable: exitUnavailable}[r.Class]; ok {
		return code
	}
	return exitInternal
}
