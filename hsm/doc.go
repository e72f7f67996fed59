// Package hsm is mp-hsm's PKCS#11 layer on github.com/miekg/pkcs11: it
// loads a module, lists slots and tokens, logs in safely, finds keys and
// certificates, and signs with a key that never leaves the card or HSM.
// (crypto11 opens read-write sessions, which some qualified cards refuse,
// logs in before the PIN flags can be read, and cannot do the context login
// of CKA_ALWAYS_AUTHENTICATE keys; both may share a module: docs/crypto11.md.)
//
//	m, err := hsm.Open("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so")
//	slot, err := m.FindSlot(hsm.TokenSelector{Label: "Buypass ID"})
//	tok, err := m.OpenSlot(slot, hsm.TokenOptions{})
//	err = tok.Login(hsm.StaticPIN(pin), hsm.LoginOptions{})
//	key, err := tok.FindKey(hsm.KeySelector{}) // the authentication key
//	sig, err := key.Sign(nil, digest, crypto.SHA256)
//
// PIN safety: cards lock after a few wrong PINs, so Login reads the PIN
// flags first, refuses on a locked token or a final try, makes exactly one
// C_Login and never retries; the PIN is never put in an error or a log.
//
// Concurrency: a module is initialised once per process; every method is
// safe for concurrent use, signatures share a pool of read-only sessions,
// and Close waits for the calls in flight (later ones get
// tokenerr.ErrClosed). Every error matches a sentinel of package tokenerr
// (classified once, by kindOf) and keeps the PKCS#11 return value (errors.As
// with a ReturnValue). Without cgo, Open returns ErrNoCgo.
package hsm
