// Package tokenerr names the kinds of failure of a PKCS#11 module, token,
// PIN or key, so that code without cgo can tell them apart (reconnect or
// stop, which exit code). Package hsm maps every PKCS#11 return value once
// to one of these sentinels, which its errors match with errors.Is.
package tokenerr

import (
	"errors"
	"slices"
)

// The module: loading it and using it.
var (
	ErrModuleNotFound = errors.New("PKCS#11 module not found")               // no file at the path, or no module of the name
	ErrNotModule      = errors.New("file is not a PKCS#11 module")           // the file is not a loadable module
	ErrModule         = errors.New("PKCS#11 module error")                   // a module failure no other sentinel describes
	ErrClosed         = errors.New("PKCS#11 module or token already closed") // used after this process closed it
)

// Slots and tokens.
var (
	ErrSlotNotFound   = errors.New("slot not found")           // no slot has the slot ID
	ErrNoToken        = errors.New("no token present")         // no token in the slot (or any): insert the card
	ErrTokenNotFound  = errors.New("token not found")          // no present token has the label or serial
	ErrAmbiguousToken = errors.New("several tokens match")     // and none was chosen
	ErrTokenRemoved   = errors.New("token removed")            // removed or no longer recognised
	ErrSessionClosed  = errors.New("PKCS#11 session closed")   // the session broke; a new one may work
	ErrDevice         = errors.New("token device error")       // the token or reader reported a device error
	ErrWriteProtected = errors.New("token is write-protected") // refuses writes or read-write sessions
)

// The PIN and the login.
var (
	ErrPINRequired  = errors.New("PIN required")  // the token needs a PIN and none was given
	ErrPINIncorrect = errors.New("PIN incorrect") // one try was spent
	// ErrPINLocked: the PIN must be unblocked with the PUK or SO PIN.
	ErrPINLocked = errors.New("PIN locked")
	// ErrPINFinalTry: one more wrong PIN locks the token; hsm's Token.Login
	// refuses to try unless LoginOptions.AllowFinalTry.
	ErrPINFinalTry = errors.New("PIN final try")
	ErrPINExpired  = errors.New("PIN expired")                   // it must be changed before use
	ErrPINInvalid  = errors.New("PIN not accepted by the token") // bad characters or length; no try spent
	ErrNotLoggedIn = errors.New("not logged in")                 // the operation needs a login first
	// ErrLoginFailed: a login failure naming no PIN problem
	// (CKR_FUNCTION_FAILED, ...). Some drivers report a wrong PIN so and
	// count the try: do not present the PIN again until a person looked.
	ErrLoginFailed = errors.New("login failed")
)

// Keys and signatures.
var (
	// ErrObjectGone: a key or object handle is stale (the token was
	// replaced or re-initialised, or the object deleted): find it again.
	ErrObjectGone    = errors.New("key or object no longer on the token")
	ErrKeyNotFound   = errors.New("key not found")                   // no private key matches the selector
	ErrAmbiguousKey  = errors.New("several keys match")              // and none was chosen
	ErrKeyCannotSign = errors.New("key cannot sign")                 // CKA_SIGN false, or not with the mechanism
	ErrUnsupported   = errors.New("unsupported signature algorithm") // or signature option
)

// pinRefusals are IsPINRefused's kinds, transients Transient's, and kinds
// every sentinel in the order Kind tries them, the PIN refusals first.
var (
	pinRefusals = []error{ErrPINIncorrect, ErrPINLocked, ErrPINFinalTry, ErrPINExpired, ErrPINInvalid, ErrPINRequired, ErrLoginFailed}
	transients  = []error{ErrTokenRemoved, ErrNoToken, ErrSessionClosed, ErrDevice, ErrNotLoggedIn, ErrObjectGone}
	kinds       = append(slices.Clip(pinRefusals),
		ErrModuleNotFound, ErrNotModule, ErrModule, ErrClosed,
		ErrSlotNotFound, ErrNoToken, ErrTokenNotFound, ErrAmbiguousToken, ErrTokenRemoved, ErrSessionClosed, ErrDevice, ErrWriteProtected,
		ErrNotLoggedIn, ErrObjectGone, ErrKeyNotFound, ErrAmbiguousKey, ErrKeyCannotSign, ErrUnsupported)
)

// Kind returns the sentinel err matches, or nil for none. A PIN refusal
// wins over any other kind, so that it is never mistaken for a fault worth
// retrying.
func Kind(err error) error {
	if i := slices.IndexFunc(kinds, func(k error) bool { return errors.Is(err, k) }); i >= 0 {
		return kinds[i]
	}
	return nil
}

// IsPINRefused reports whether the token refused the PIN or the login
// refused to present one. Never retry such an error: each retry spends a
// PIN try, and cards lock after a few.
func IsPINRefused(err error) bool {
	return matchesAny(err, pinRefusals)
}

// Transient reports whether err is a token or reader failure that opening
// the token again may cure; false for PIN refusals (never retried),
// ErrClosed and wrong choices.
func Transient(err error) bool {
	return !IsPINRefused(err) && matchesAny(err, transients)
}

func matchesAny(err error, targets []error) bool {
	return slices.ContainsFunc(targets, func(k error) bool { return errors.Is(err, k) })
}
