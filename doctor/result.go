package doctor

import (
	"context"
	"errors"
	"strings"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

// Status is the outcome of one check.
type Status string

// The statuses of a check.
const (
	OK   Status = "ok"   // nothing wrong
	Warn Status = "warn" // works, but something needs attention (see Hint)
	Fail Status = "fail" // a token cannot be had this way (see Hint and Class)
	Skip Status = "skip" // not run: what it needs is missing (see Message)
)

// Class says what kind of problem a failed check found. mp-hsm doctor exits
// with the code its command-line contract gives each class (the numbers in
// parentheses); a server may use it to tell its own configuration from the
// card from Maskinporten.
type Class int

// The classes of failures.
const (
	ClassNone        Class = iota // the check did not fail
	ClassInternal                 // an unexpected error (1)
	ClassUsage                    // bad configuration or input (2)
	ClassToken                    // module, token, PIN, key or certificate (3)
	ClassRefused                  // Maskinporten refused, or would refuse, the grant (4)
	ClassUnavailable              // Maskinporten unreachable or failing (5)
)

// Result is what one check found. Its JSON form (check, status, message,
// hint) is what mp-hsm doctor --output json prints, and part of its
// command-line contract.
type Result struct {
	// Check names the check, such as "pin" or "token-request".
	Check string `json:"check"`
	// Status is the outcome.
	Status Status `json:"status"`
	// Message says what the check found, in one line. It never holds a
	// PIN, a grant or a token.
	Message string `json:"message"`
	// Hint says what to do, for a warning or a failure; it may be empty.
	// Hints name mp-hsm's commands and flags.
	Hint string `json:"hint"`
	// Class is, for a failed check, the kind of problem; ClassNone
	// otherwise.
	Class Class `json:"-"`
	// Err is the error that failed the check, when an error did: callers
	// can tell causes apart with errors.Is and errors.As (a *hsm.PINError,
	// a *grant.TokenError, ...). Message is written from it.
	Err error `json:"-"`
}

// Results are the results of a Run, in the order the checks ran.
type Results []Result

// Count returns how many results have status s.
func (rs Results) Count(s Status) int {
	n := 0
	for _, r := range rs {
		if r.Status == s {
			n++
		}
	}
	return n
}

// FirstFailure returns the first failed result, or nil when none failed.
func (rs Results) FirstFailure() *Result {
	for i := range rs {
		if rs[i].Status == Fail {
			return &rs[i]
		}
	}
	return nil
}

// Failed returns a failed result of check for err, with err's class (see
// ClassOf) or def when err has none.
func Failed(check string, def Class, err error, hint string) Result {
	return Result{Check: check, Status: Fail, Message: err.Error(), Hint: hint, Class: ClassOf(err, def), Err: err}
}

// ClassOf returns the class of err: ClassUsage for an invalid grant request
// or configuration, ClassRefused for a refusal by Maskinporten,
// ClassUnavailable for an outage or a timeout, ClassToken for a key or
// certificate that cannot be used (including a certificate for the other
// environment); def for any other error, and ClassNone for nil.
func ClassOf(err error, def Class) Class {
	switch {
	case err == nil:
		return ClassNone
	case errors.Is(err, grant.ErrInvalidRequest),
		errors.Is(err, grant.ErrInvalidConfig) && !errors.Is(err, grant.ErrEnvironmentMismatch):
		return ClassUsage
	case errors.Is(err, grant.ErrRefused):
		return ClassRefused
	case errors.Is(err, grant.ErrUnavailable), errors.Is(err, grant.ErrBadResponse),
		errors.Is(err, context.DeadlineExceeded):
		return ClassUnavailable
	case errors.Is(err, signer.ErrKeyTooSmall), errors.Is(err, signer.ErrCertificateMismatch),
		errors.Is(err, signer.ErrUnsupportedKey), errors.Is(err, grant.ErrEnvironmentMismatch):
		return ClassToken
	}
	return def
}

// normalize keeps the message and hint on one line each, and gives a
// failure without a class ClassInternal: a failed check is never "none".
func (r Result) normalize() Result {
	r.Message = oneLine(r.Message)
	r.Hint = oneLine(r.Hint)
	if r.Status == Fail && r.Class == ClassNone {
		r.Class = ClassInternal
	}
	return r
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", "; ")
}
