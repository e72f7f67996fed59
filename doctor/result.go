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

// Class is the kind of problem a failed check found; mp-hsm doctor exits
// with the code in parentheses.
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

// Result is what one check found. Its JSON form is what mp-hsm doctor
// --output json prints, part of the command-line contract.
type Result struct {
	Check   string `json:"check"`   // such as "pin" or "token-request"
	Status  Status `json:"status"`  // the outcome
	Message string `json:"message"` // one line; never a PIN, grant or token
	Hint    string `json:"hint"`    // what to do, naming mp-hsm's commands and flags
	Class   Class  `json:"-"`       // for a failure, the kind of problem
	Err     error  `json:"-"`       // the error that failed the check, for errors.Is/As
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

// ClassOf returns the class of err (ClassNone for nil), or def when grant's
// and signer's sentinels do not tell.
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

// normalize keeps message and hint on one line each; a failure is never ClassNone.
func (r Result) normalize() Result {
	oneLine := strings.NewReplacer("\r", "", "\n", "; ")
	r.Message = oneLine.Replace(strings.TrimSpace(r.Message))
	r.Hint = oneLine.Replace(strings.TrimSpace(r.Hint))
	if r.Status == Fail && r.Class == ClassNone {
		r.Class = ClassInternal
	}
	return r
}
