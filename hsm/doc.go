// Package hsm is mp-hsm's PKCS#11 layer: it loads a module, lists slots and
// tokens, logs in safely, finds keys and certificates, and signs with a key
// that never leaves the smart card or HSM.
//
// It is built directly on github.com/miekg/pkcs11. (crypto11 was considered
// and left out: it always opens read-write sessions, which some qualified
// cards refuse; it logs in inside its constructor, before the token's PIN
// flags can be read; and it cannot do the CKU_CONTEXT_SPECIFIC login that keys
// with CKA_ALWAYS_AUTHENTICATE need. A program may still use both on one
// module: docs/crypto11.md says how.)
//
// # The usual flow
//
//	m, err := hsm.Open("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so")
//	slot, err := m.FindSlot(hsm.TokenSelector{Label: "Buypass ID"})
//	tok, err := m.OpenToken(slot.ID, hsm.TokenOptions{})
//	err = tok.Login(hsm.StaticPIN(pin), hsm.LoginOptions{})
//	key, err := tok.FindKey(hsm.KeySelector{}) // the authentication key
//	sig, err := key.Sign(nil, digest, crypto.SHA256)
//
// # PIN safety
//
// Smart cards lock after a few wrong PINs. Token.Login reads the token's PIN
// flags first and refuses to present a PIN when the token says it is locked,
// or when the next wrong PIN would lock it (unless LoginOptions.AllowFinalTry
// is set). It makes exactly one C_Login call per Login and never retries on
// its own: a wrong PIN is reported, with what the token's flags now say, and
// the caller decides. The PIN is never put in an error or a log line.
//
// # Sessions and concurrency
//
// A Module may be opened several times in one process (PKCS#11 modules are
// initialised once per process; Open counts references and the last Close
// finalises, but only a module that Open initialised: one that other code in
// the process, such as crypto11, initialised first is left to that code).
// A module that other code finalises under open Modules makes their calls
// return ErrClosed; Open loads it afresh. A Token keeps one session for its login state and object
// searches, and a pool of read-only sessions for signing: signatures run in
// parallel, one per session, up to TokenOptions.MaxSessions (by default the
// token's own session limit, capped at twice GOMAXPROCS). Keys are found once
// and their handles kept: nothing is searched per signature. All exported
// methods are safe for concurrent use.
//
// # Errors
//
// PKCS#11 return values are classified here, once, into the sentinel
// errors of package tokenerr, which this package exports under the same
// names (ErrTokenRemoved, ErrPINIncorrect, ErrKeyNotFound, ...) and which
// errors.Is recognises; the original return value stays reachable with
// errors.As(err, new(ReturnValue)). IsPINRefused and Transient classify an
// error for a caller deciding whether to stop (a PIN problem: never retry)
// or to open the token again (a removed card, a broken session). Because
// the sentinels live in tokenerr, which needs no cgo, code that only
// judges errors (the daemon, the command line's exit codes) need not
// import this package, and no other package needs PKCS#11 return values.
//
// # Closing
//
// Module.Close and Token.Close wait for the calls in flight (a signature
// under way finishes) and then end the sessions; every later call on the
// Module, its Tokens or their Keys returns ErrClosed. Module.Close closes
// the tokens opened from it.
package hsm
