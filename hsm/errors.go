package hsm

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// ErrNoCgo is returned by Open, and so by everything that loads a module,
// in a program built without cgo (CGO_ENABLED=0): PKCS#11 needs cgo.
var ErrNoCgo = errors.New("built without cgo: PKCS#11 needs cgo")

// Error is a failed PKCS#11 operation: what was done, which sentinel it
// matches, and the module's return value (zero when the failure did not come
// from the module).
type Error struct {
	Op     string      // the operation, such as "C_Login" or "open module"
	Kind   error       // one of the sentinels of package tokenerr (or ErrObjectExists, ErrReadOnly)
	Code   ReturnValue // the PKCS#11 return value, or 0
	Detail string      // what else helps a person act, or ""
}

// Error returns one line: the operation, the sentinel's text, the return
// value's name and the detail.
func (e *Error) Error() string {
	s := e.Op + ": " + e.Kind.Error()
	if e.Code != 0 {
		s += " (" + e.Code.Error() + ")"
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap gives errors.Is and errors.As both the sentinel and the PKCS#11
// return value.
func (e *Error) Unwrap() []error { return kindAndCode(e.Kind, e.Code) }

func kindAndCode(kind error, code ReturnValue) []error {
	if code != 0 {
		return []error{kind, code}
	}
	return []error{kind}
}

// wrap turns a PKCS#11 call's error into an *Error; other errors become
// tokenerr.ErrModule. nil stays nil.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var rv ReturnValue
	if !errors.As(err, &rv) {
		return &Error{Op: op, Kind: tokenerr.ErrModule, Detail: err.Error()}
	}
	e := &Error{Op: op, Kind: kindOf(rv), Code: rv}
	if rv == pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED {
		e.Detail = finalisedDetail
	}
	return e
}

// kinds maps PKCS#11 return values to sentinels: the one place (kindOf).
var kinds = []struct {
	kind  error
	codes []ReturnValue
}{
	{tokenerr.ErrTokenRemoved, []ReturnValue{pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED}},
	{tokenerr.ErrSessionClosed, []ReturnValue{pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_COUNT}},
	{tokenerr.ErrDevice, []ReturnValue{pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_MEMORY, pkcs11.CKR_FUNCTION_FAILED, pkcs11.CKR_GENERAL_ERROR}},
	{tokenerr.ErrWriteProtected, []ReturnValue{pkcs11.CKR_TOKEN_WRITE_PROTECTED}},
	{tokenerr.ErrPINIncorrect, []ReturnValue{pkcs11.CKR_PIN_INCORRECT}},
	{tokenerr.ErrPINLocked, []ReturnValue{pkcs11.CKR_PIN_LOCKED}},
	{tokenerr.ErrPINExpired, []ReturnValue{pkcs11.CKR_PIN_EXPIRED}},
	{tokenerr.ErrPINInvalid, []ReturnValue{pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE}},
	{tokenerr.ErrNotLoggedIn, []ReturnValue{pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_USER_PIN_NOT_INITIALIZED}},
	{tokenerr.ErrSlotNotFound, []ReturnValue{pkcs11.CKR_SLOT_ID_INVALID}},
	{tokenerr.ErrKeyCannotSign, []ReturnValue{pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_KEY_TYPE_INCONSISTENT}},
	{tokenerr.ErrUnsupported, []ReturnValue{pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID}},
	{tokenerr.ErrObjectGone, []ReturnValue{pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID}},
	{tokenerr.ErrClosed, []ReturnValue{pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED}},
}

// kindOf returns rv's sentinel in kinds, else tokenerr.ErrModule.
func kindOf(rv ReturnValue) error {
	for _, k := range kinds {
		if slices.Contains(k.codes, rv) {
			return k.kind
		}
	}
	return tokenerr.ErrModule
}

// PINError is returned by Token.Login when the token refused the PIN or when
// Login refused to try one. Flags holds the token's PIN flags as read after
// the attempt (or before, when none was made), so that the caller can say
// how many tries are left without trying again.
type PINError struct {
	Kind      error       // tokenerr.ErrPINIncorrect, tokenerr.ErrPINLocked, tokenerr.ErrPINFinalTry, ...
	Code      ReturnValue // the C_Login return value, or 0 when no attempt was made
	Flags     TokenFlags  // the token's flags
	Attempted bool        // whether C_Login was called
}

// Error says what happened and what the token's flags now say. It never
// contains the PIN.
func (e *PINError) Error() string {
	if !e.Attempted && e.Code != 0 { // a refusal remembered: nothing was presented this time
		return "login: refusing to present the PIN again: the token refused it before (" + e.Code.Error() + "); check the PIN and the token, then start again"
	}
	var msg string
	switch e.Kind {
	case tokenerr.ErrPINFinalTry:
		msg = "refusing to try a PIN: the token says the next wrong PIN locks it; when you are certain of the PIN, " +
			"allow the final try explicitly (mp-hsm --allow-final-pin-try; LoginOptions.AllowFinalTry)"
	case tokenerr.ErrPINLocked:
		switch {
		case e.Attempted && !e.Flags.PINLocked():
			// tpm2-pkcs11 answers every PIN so while the TPM's
			// dictionary-attack lockout lasts, and never sets the flag.
			msg = "PIN locked: the token refuses PINs as locked although its flags do not say so; " +
				"a TPM does while its dictionary-attack lockout lasts (until its recovery time has passed, " +
				"or tpm2_dictionarylockout --clear-lockout)"
		case e.Attempted:
			msg = "PIN locked: the token is now blocked; unblock it with the PUK (or SO PIN) before use"
		default:
			msg = "refusing to try a PIN: the token says the PIN is locked; unblock it with the PUK (or SO PIN) first"
		}
	case tokenerr.ErrPINIncorrect:
		msg = "PIN incorrect (one try spent, not retried): " + e.Flags.triesLeft()
	case tokenerr.ErrPINRequired:
		msg = "the token needs a PIN and none was given"
	case tokenerr.ErrLoginFailed:
		msg = "the token refused the login without naming a PIN error (it may have counted a wrong PIN); the PIN is not presented again: check it and the token, then retry by hand"
	default:
		msg = e.Kind.Error()
	}
	if e.Code != 0 {
		msg += " (" + e.Code.Error() + ")"
	}
	return "login: " + msg
}

// Unwrap exposes the sentinel and the PKCS#11 return value.
func (e *PINError) Unwrap() []error { return kindAndCode(e.Kind, e.Code) }

// SelectionError is returned when a token or key selection matches nothing
// or more than one. Candidates lists what exists (not found) or what matched
// (ambiguous), so the caller can tell the user how to pick one.
type SelectionError struct {
	Kind       error     // tokenerr.ErrTokenNotFound, ErrAmbiguousToken, ErrSlotNotFound, ErrNoToken, ErrKeyNotFound or ErrAmbiguousKey
	Wanted     string    // the selection, as text ("label \"x\"", "id 01"), or "" for the default choice
	Candidates []string  // as a person picks one
	Tokens     []Slot    // for token errors: the slots considered
	Keys       []KeyInfo // for key errors: the keys considered
	// ModuleOutput, for errors that found no token, is what the module wrote
	// while it loaded (OpenOptions.HoldLoadOutput): show it beside the error.
	ModuleOutput string
}

// Error lists the candidates on the same line.
func (e *SelectionError) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.Error())
	if e.Wanted != "" {
		fmt.Fprintf(&b, " for %s", e.Wanted)
	}
	if len(e.Candidates) > 0 {
		switch e.Kind {
		case tokenerr.ErrAmbiguousKey, tokenerr.ErrAmbiguousToken:
			b.WriteString("; choose one of: ")
		case tokenerr.ErrNoToken:
			b.WriteString(": ")
		default:
			b.WriteString("; available: ")
		}
		b.WriteString(strings.Join(e.Candidates, "; "))
	} else if e.Kind == tokenerr.ErrKeyNotFound {
		b.WriteString("; the token shows no private keys (log in first?)")
	}
	return b.String()
}

// Unwrap returns the sentinel.
func (e *SelectionError) Unwrap() error { return e.Kind }
