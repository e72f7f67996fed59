//go:build cgo

package hsm

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"

	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// keptPIN is a PINSource that remembers every slice it hands out, so that
// a test can look at them after the caller is done.
type keptPIN struct {
	pin    []byte
	mu     sync.Mutex
	handed [][]byte
}

func (k *keptPIN) source() ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	b := append([]byte(nil), k.pin...)
	k.handed = append(k.handed, b)
	return b, nil
}

// zeroed fails t unless every slice handed out is all zero bytes.
func (k *keptPIN) zeroed(t *testing.T, what string) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.handed) == 0 {
		t.Fatalf("%s: the PIN source was never asked", what)
	}
	for i, b := range k.handed {
		if !bytes.Equal(b, make([]byte, len(b))) {
			t.Errorf("%s: PIN copy %d is not zeroed after use", what, i)
		}
	}
	k.handed = nil
}

// TestPINZeroedAfterLogin checks the promise of Token.Login and of the
// context-specific login before each signature with an always-authenticate
// key: the PIN bytes the PINSource returned are zeroed once presented,
// whether the PIN was right or wrong. (The C copy miekg/pkcs11 makes for
// C_Login is freed without zeroing; see docs/SECURITY.md.)
func TestPINZeroedAfterLogin(t *testing.T) {
	tok, d, st := openDouble(t, 0)

	wrong := &keptPIN{pin: []byte("0000")}
	if err := tok.Login(wrong.source, LoginOptions{}); !errors.Is(err, tokenerr.ErrPINIncorrect) {
		t.Fatalf("Login with a wrong PIN = %v, want tokenerr.ErrPINIncorrect", err)
	}
	wrong.zeroed(t, "a wrong PIN")

	right := &keptPIN{pin: []byte(st.PIN)}
	if err := tok.Login(right.source, LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	right.zeroed(t, "the right PIN")

	st.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{9}, AlwaysAuthenticate: true})
	k, err := tok.FindKey(KeySelector{ID: []byte{9}})
	if err != nil {
		t.Fatal(err)
	}
	before := d.logins.Load()
	digest := sha256.Sum256([]byte("grant"))
	for range 2 {
		if _, err := k.Sign(nil, digest[:], crypto.SHA256); err != nil {
			t.Fatal(err)
		}
	}
	if n := d.logins.Load() - before; n != 2 {
		t.Fatalf("%d context-specific logins for 2 signatures, want 2", n)
	}
	right.zeroed(t, "the PIN of the context-specific logins")
}
