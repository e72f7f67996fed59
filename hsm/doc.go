// Package hsm is mp-hsm's PKCS#11 layer on github.com/miekg/pkcs11: it
// loads a module, lists slots and tokens, logs in safely, finds keys and
// certificates, and signs with a key that never leaves the card or HSM.
// (crypto11 opens read-write sessions, which some qualified cards refuse,
// logs in before the PIN flags can be read, and cannot do the
// CKU_CONTEXT_SPECIFIC login of CKA_ALWAYS_AUTHENTICATE keys; a program may
// still use both on one module: docs/crypto11.md.)
//
//	m, err := hsm.Open("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so")
//	slot, err := m.FindSlot(hsm.TokenSelector{Label: "Buypass ID"})
//	tok, err := m.OpenSlot(slot, hsm.TokenOptions{})
//	err = tok.Login(hsm.StaticPIN(pin), hsm.LoginOptions{})
//	key, err := tok.FindKey(hsm.KeySelector{}) // the authentication key
//	sig, err := key.Sign(nil, digest, crypto.SHA256)
//
// PIN safety: cards lock after a few wrong PINs, so Token.Login reads the
// PIN flags first, refuses on a locked token or on the final try (unless
// LoginOptions.AllowFinalTry), makes exactly one C_Login and never retries.
// The PIN is never put in an error or a log line.
//
// Sessions and concurrency: a module is initialised once per process (Open
// counts references; the last Close finalises only a module Open
// initialised). A Token keeps one session for its login and searches and a
// pool of read-only signing sessions, up to TokenOptions.MaxSessions; keys
// are found once, never per signature. All exported methods are safe for
// concurrent use; Close waits for the calls in flight, and later calls
// return tokenerr.ErrClosed, as do calls on Modules whose module other code
// finalised.
//
// Errors: PKCS#11 return values are classified here, once (kindOf), into
// the sentinels of package tokenerr, which needs no cgo; every error matches
// one with errors.Is, and the return value stays reachable (errors.As with
// a ReturnValue).
//
// Without cgo the package compiles, but Open returns ErrNoCgo.
package hsm
