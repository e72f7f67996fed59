// Package tokenerr names the kinds of failure of a PKCS#11 module, token,
// PIN or key, so that code without cgo can tell them apart (reconnect or
// stop, which exit code). Package hsm classifies every PKCS#11 return
// value once into one of these sentinels, and its errors match it with
// errors.Is.
package tokenerr

import (
	"errors"
	"slices"
)

// The module: loading it and using it.
var (
	// ErrModuleNotFound: no file at the module path, or no module of the
	// name asked for.
	ErrModuleNotFound = errors.New("PKCS#11 module not found")
	// ErrNotModule: the file exists but is not a loadable PKCS#11 module.
	ErrNotModule = errors.New("file is not a PKCS#11 module")
	// ErrModule: the module failed in a way no other sentinel describes.
	ErrModule = errors.New("PKCS#11 module error")
	// ErrClosed: the module, token or key was used after this process
	// closed it.
	ErrClosed = errors.New("PKCS#11 module or token already closed")
)

// Slots and tokens.
var (
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
)

// The PIN and the login.
var (
	// ErrPINRequired: the token needs a PIN and none was given.
	ErrPINRequired = errors.New("PIN required")
	// ErrPINIncorrect: the token rejected the PIN. One try was spent.
	ErrPINIncorrect = errors.New("PIN incorrect")
	// ErrPINLocked: the PIN is locked (blocked); it must be unblocked with
	// the PUK or SO PIN before the token can be used.
	ErrPINLocked = errors.New("PIN locked")
	// ErrPINFinalTry: the token says one more wrong PIN locks it; hsm's
	// Token.Login refuses to try unless told to (LoginOptions.AllowFinalTry).
	ErrPINFinalTry = errors.New("PIN final try")
	// ErrPINExpired: the PIN must be changed before use.
	ErrPINExpired = errors.New("PIN expired")
	// ErrPINInvalid: the PIN has characters or a length the token does not
	// accept; no try was spent.
	ErrPINInvalid = errors.New("PIN not accepted by the token")
	// ErrNotLoggedIn: the operation needs a login first.
	ErrNotLoggedIn = errors.New("not logged in")
	// ErrLoginFailed: the login failed with a code that names no PIN
	// problem (CKR_FUNCTION_FAILED, CKR_DEVICE_ERROR, ...). Some drivers
	// report a wrong PIN so, and the try may have been counted: the PIN
	// must not be presented again until a person has looked.
	ErrLoginFailed = errors.New("login failed")
)

// Keys and signatures.
var (
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

// pinRefusals are the kinds IsPINRefused reports.
var pinRefusals = []error{ErrPINIncorrect, ErrPINLocked, ErrPINFinalTry, ErrPINExpired, ErrPINInvalid, ErrPINRequired, ErrLoginFailed}

// kinds are every sentinel, in the order Kind tries them: the PIN
// refusals first.
var kinds = append(slices.Clip(pinRefusals),
	ErrModuleNotFound, ErrNotModule, ErrModule, ErrClosed,
	ErrSlotNotFound, ErrNoToken, ErrTokenNotFound, ErrAmbiguousToken, ErrTokenRemoved, ErrSessionClosed, ErrDevice, ErrWriteProtected,
	ErrNotLoggedIn, ErrObjectGone, ErrKeyNotFound, ErrAmbiguousKey, ErrKeyCannotSign, ErrUnsupported)

// transients are the kinds Transient reports.
var transients = []error{ErrTokenRemoved, ErrNoToken, ErrSessionClosed, ErrDevice, ErrNotLoggedIn, ErrObjectGone}

// Kind returns the sentinel err matches, or nil for none. A PIN refusal
// wins over any other kind, so that it is never mistaken for a fault worth
// retrying.
func Kind(err error) error {
	if i := slices.IndexFunc(kinds, func(k error) bool { return errors.Is(err, k) }); i >= 0 {
		return kinds[i]
	}
	return nil
}

// IsPINRefused reports whether err says the token refused the PIN or the
// login refused to present one (pinRefusals). Never retry such an error:
// each retry spends a PIN try, and cards lock after a few.
func IsPINRefused(err error) bool {
	return matchesAny(err, pinRefusals)
}

// Transient reports whether err is a token or reader failure that opening
// the token again may cure (transients). It is false for PIN refusals,
// which must not be retried, and for ErrClosed and wrong choices.
func Transient(err error) bool {
	return !IsPINRefused(err) && matchesAny(err, transients)
}

func matchesAny(err error, targets []error) bool {
	return slices.ContainsFunc(targets, func(k error) bool { return errors.Is(err, k) })
}
