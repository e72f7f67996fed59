package hsm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// Sentinel errors. Errors returned by this package match one of these with
// errors.Is; most also carry the PKCS#11 return value (errors.As with a
// pkcs11.Error).
var (
	// ErrModuleNotFound: no file at the module path.
	ErrModuleNotFound = errors.New("PKCS#11 module not found")
	// ErrNotModule: the file exists but is not a loadable PKCS#11 module.
	ErrNotModule = errors.New("file is not a PKCS#11 module")
	// ErrModule: the module failed in a way no other sentinel describes.
	ErrModule = errors.New("PKCS#11 module error")
	// ErrClosed: the Module, Token or Key was used after Close.
	ErrClosed = errors.New("PKCS#11 module or token already closed")

	// ErrSlotNotFound: no slot has the requested slot ID.
	ErrSlotNotFound = errors.New("slot not found")
	// ErrNoToken: the slot (or every slot) has no token: insert the card.
	ErrNoToken = errors.New("no token present")
	// ErrTokenNotFound: no present token matches the label or serial asked for.
	ErrTokenNotFound = errors.New("token not found")
	// ErrAmbiguousToken: several tokens match and none was chosen.
	ErrAmbiguousToken = errors.New("several tokens match")
	// ErrTokenRemoved: the token was removed or is no longer recognised.
	ErrTokenRemoved = errors.New("token removed")
	// ErrSessionClosed: the session broke (closed or invalid handle); a new
	// one may work.
	ErrSessionClosed = errors.New("PKCS#11 session closed")
	// ErrDevice: the token or reader reported a device error.
	ErrDevice = errors.New("token device error")
	// ErrWriteProtected: the token refuses writes or read-write sessions.
	ErrWriteProtected = errors.New("token is write-protected")

	// ErrPINRequired: the token needs a PIN and none was given.
	ErrPINRequired = errors.New("PIN required")
	// ErrPINIncorrect: the token rejected the PIN. One try was spent.
	ErrPINIncorrect = errors.New("PIN incorrect")
	// ErrPINLocked: the PIN is locked (blocked); it must be unblocked with
	// the PUK or SO PIN before the token can be used.
	ErrPINLocked = errors.New("PIN locked")
	// ErrPINFinalTry: the token says one more wrong PIN locks it; Login
	// refuses to try unless LoginOptions.AllowFinalTry is set.
	ErrPINFinalTry = errors.New("PIN final try")
	// ErrPINExpired: the PIN must be changed before use.
	ErrPINExpired = errors.New("PIN expired")
	// ErrPINInvalid: the PIN has characters or a length the token does not
	// accept; no try was spent.
	ErrPINInvalid = errors.New("PIN not accepted by the token")
	// ErrNotLoggedIn: the operation needs a login first.
	ErrNotLoggedIn = errors.New("not logged in")
	// ErrLoginFailed: C_Login failed with a code that names no PIN
	// problem (CKR_FUNCTION_FAILED, CKR_DEVICE_ERROR, ...). Some drivers
	// report a wrong PIN so, and the try may have been counted: the PIN
	// must not be presented again until a person has looked.
	ErrLoginFailed = errors.New("login failed")

	// ErrObjectGone: a key or object handle is no longer valid
	// (CKR_OBJECT_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID): the token was
	// replaced or re-initialised, or the object deleted. Find the key again.
	ErrObjectGone = errors.New("key or object no longer on the token")
	// ErrKeyNotFound: no private key matches the selector.
	ErrKeyNotFound = errors.New("key not found")
	// ErrAmbiguousKey: several private keys match and none was chosen.
	ErrAmbiguousKey = errors.New("several keys match")
	// ErrKeyCannotSign: the key does not allow signing (CKA_SIGN false) or
	// does not support the mechanism asked for.
	ErrKeyCannotSign = errors.New("key cannot sign")
	// ErrUnsupported: the algorithm or signature option is not supported.
	ErrUnsupported = errors.New("unsupported signature algorithm")
)

// Error is a failed PKCS#11 operation: what was done, which sentinel it
// matches, and the module's return value (zero when the failure did not come
// from the module).
type Error struct {
	Op     string       // the operation, such as "C_Login" or "open module"
	Kind   error        // one of the sentinels of this package
	Code   pkcs11.Error // the PKCS#11 return value, or 0
	Detail string       // what else helps a person act, or ""
}

// Error returns one line: the operation, the sentinel's text, the return
// value's name and the detail.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	b.WriteString(": ")
	b.WriteString(e.Kind.Error())
	if e.Code != 0 {
		b.WriteString(" (")
		b.WriteString(e.Code.Error())
		b.WriteString(")")
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Unwrap gives errors.Is and errors.As both the sentinel and the PKCS#11
// return value.
func (e *Error) Unwrap() []error {
	if e.Code != 0 {
		return []error{e.Kind, e.Code}
	}
	return []error{e.Kind}
}

// wrap turns a PKCS#11 call's error into an *Error. Non-PKCS#11 errors are
// wrapped as ErrModule. nil stays nil.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return &Error{Op: op, Kind: ErrModule, Detail: err.Error()}
	}
	return &Error{Op: op, Kind: kindOf(rv), Code: rv}
}

// kindOf maps a PKCS#11 return value to a sentinel.
func kindOf(rv pkcs11.Error) error {
	switch rv {
	case pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED:
		return ErrTokenRemoved
	case pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_COUNT:
		return ErrSessionClosed
	case pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_MEMORY, pkcs11.CKR_FUNCTION_FAILED, pkcs11.CKR_GENERAL_ERROR:
		return ErrDevice
	case pkcs11.CKR_TOKEN_WRITE_PROTECTED:
		return ErrWriteProtected
	case pkcs11.CKR_PIN_INCORRECT:
		return ErrPINIncorrect
	case pkcs11.CKR_PIN_LOCKED:
		return ErrPINLocked
	case pkcs11.CKR_PIN_EXPIRED:
		return ErrPINExpired
	case pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
		return ErrPINInvalid
	case pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_USER_PIN_NOT_INITIALIZED:
		return ErrNotLoggedIn
	case pkcs11.CKR_SLOT_ID_INVALID:
		return ErrSlotNotFound
	case pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_KEY_TYPE_INCONSISTENT:
		return ErrKeyCannotSign
	case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID:
		return ErrUnsupported
	case pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID:
		return ErrObjectGone
	case pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return ErrClosed
	}
	return ErrModule
}

// IsPINRefused reports whether err says that the token refused the PIN, or
// that Login refused to present one: a *PINError, or any of ErrPINIncorrect,
// ErrPINLocked, ErrPINFinalTry, ErrPINExpired, ErrPINInvalid and
// ErrPINRequired. Such an error must never be retried on its own: each retry
// with the same PIN spends a try, and cards lock after a few. Tell the user
// (Error says what the token's flags now report) and let them act.
func IsPINRefused(err error) bool {
	if err == nil {
		return false
	}
	var pe *PINError
	if errors.As(err, &pe) {
		return true
	}
	for _, k := range []error{ErrPINIncorrect, ErrPINLocked, ErrPINFinalTry, ErrPINExpired, ErrPINInvalid, ErrPINRequired} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// Transient reports whether err is a failure of the token or the reader
// that may pass once the token is opened again (a new module, token and
// login, and the key found again): the card was removed (ErrTokenRemoved)
// or is not in the reader (ErrNoToken), the session broke
// (ErrSessionClosed), the device failed (ErrDevice), the login was lost
// (ErrNotLoggedIn), or the key's handle is stale (ErrObjectGone).
//
// It is false for PIN errors (see IsPINRefused), which must not be retried,
// for ErrClosed, which says this process closed the Module or Token itself,
// and for errors that name a wrong choice (ErrKeyNotFound, ErrUnsupported,
// ...), which opening again does not cure.
func Transient(err error) bool {
	if err == nil || IsPINRefused(err) {
		return false
	}
	for _, k := range []error{ErrTokenRemoved, ErrNoToken, ErrSessionClosed, ErrDevice, ErrNotLoggedIn, ErrObjectGone} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// PINError is returned by Token.Login when the token refused the PIN or when
// Login refused to try one. Flags holds the token's PIN flags as read after
// the attempt (or before, when no attempt was made), so that the caller can
// say how many tries are left without trying again.
type PINError struct {
	Kind      error        // ErrPINIncorrect, ErrPINLocked, ErrPINFinalTry, ...
	Code      pkcs11.Error // the C_Login return value, or 0 when no attempt was made
	Flags     TokenFlags   // the token's flags
	Attempted bool         // whether C_Login was called
}

// Error says what happened and what the token's flags now say. It never
// contains the PIN.
func (e *PINError) Error() string {
	var msg string
	switch {
	case !e.Attempted && e.Code != 0:
		// A refusal remembered: nothing was presented this time.
		return "login: refusing to present the PIN again: the token refused it before (" + e.Code.Error() + "); check the PIN and the token, then start again"
	}
	switch e.Kind {
	case ErrPINFinalTry:
		msg = "refusing to try a PIN: the token says the next wrong PIN locks it; check the PIN and allow the final try explicitly"
	case ErrPINLocked:
		if e.Attempted {
			msg = "PIN locked: the token is now blocked; unblock it with the PUK (or SO PIN) before use"
		} else {
			msg = "refusing to try a PIN: the token says the PIN is locked; unblock it with the PUK (or SO PIN) first"
		}
	case ErrPINIncorrect:
		msg = "PIN incorrect (one try spent, not retried): " + e.Flags.TriesLeft()
	case ErrPINRequired:
		msg = "the token needs a PIN and none was given"
	case ErrLoginFailed:
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
func (e *PINError) Unwrap() []error {
	errs := []error{e.Kind}
	if e.Code != 0 {
		errs = append(errs, e.Code)
	}
	return errs
}

// SelectionError is returned when a token or key selection matches nothing or
// more than one. Candidates lists what exists (for ErrTokenNotFound and
// ErrKeyNotFound) or what matched (for the ambiguous cases), so the caller
// can tell the user how to pick one.
type SelectionError struct {
	Kind       error  // ErrTokenNotFound, ErrAmbiguousToken, ErrSlotNotFound, ErrNoToken, ErrKeyNotFound or ErrAmbiguousKey
	Wanted     string // the selection, as text ("label \"x\"", "id 01"), or "" for the default choice
	Candidates []string
	Tokens     []Slot    // for token errors: the slots considered
	Keys       []KeyInfo // for key errors: the keys considered
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
		case ErrAmbiguousKey, ErrAmbiguousToken:
			b.WriteString("; choose one of: ")
		case ErrNoToken:
			b.WriteString(": ")
		default:
			b.WriteString("; available: ")
		}
		b.WriteString(strings.Join(e.Candidates, "; "))
	} else if e.Kind == ErrKeyNotFound {
		b.WriteString("; the token shows no private keys (log in first?)")
	}
	return b.String()
}

// Unwrap returns the sentinel.
func (e *SelectionError) Unwrap() error { return e.Kind }
