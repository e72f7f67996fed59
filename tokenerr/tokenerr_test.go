package tokenerr_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// kindError is shaped like hsm's errors: it unwraps to its kind and to a
// cause (there, the PKCS#11 return value).
type kindError struct{ kind, cause error }

func (e *kindError) Error() string   { return e.kind.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.cause} }

func TestPredicates(t *testing.T) {
	code := errors.New("CKR_SOMETHING")
	for _, tc := range []struct {
		name       string
		err        error
		kind       error
		transient  bool
		pinRefused bool
	}{
		{"nil", nil, nil, false, false},
		{"not from a token", errors.New("EOF"), nil, false, false},
		{"removed", tokenerr.ErrTokenRemoved, tokenerr.ErrTokenRemoved, true, false},
		{"removed, wrapped twice", fmt.Errorf("signing: %w", &kindError{tokenerr.ErrTokenRemoved, code}), tokenerr.ErrTokenRemoved, true, false},
		{"no token", tokenerr.ErrNoToken, tokenerr.ErrNoToken, true, false},
		{"session closed", &kindError{tokenerr.ErrSessionClosed, code}, tokenerr.ErrSessionClosed, true, false},
		{"device", &kindError{tokenerr.ErrDevice, code}, tokenerr.ErrDevice, true, false},
		{"not logged in", &kindError{tokenerr.ErrNotLoggedIn, code}, tokenerr.ErrNotLoggedIn, true, false},
		{"object gone", &kindError{tokenerr.ErrObjectGone, code}, tokenerr.ErrObjectGone, true, false},

		{"PIN incorrect", &kindError{tokenerr.ErrPINIncorrect, code}, tokenerr.ErrPINIncorrect, false, true},
		{"PIN locked", tokenerr.ErrPINLocked, tokenerr.ErrPINLocked, false, true},
		{"PIN final try", tokenerr.ErrPINFinalTry, tokenerr.ErrPINFinalTry, false, true},
		{"PIN expired", tokenerr.ErrPINExpired, tokenerr.ErrPINExpired, false, true},
		{"PIN invalid", tokenerr.ErrPINInvalid, tokenerr.ErrPINInvalid, false, true},
		{"PIN required", tokenerr.ErrPINRequired, tokenerr.ErrPINRequired, false, true},
		{"login failed without a PIN code", &kindError{tokenerr.ErrLoginFailed, code}, tokenerr.ErrLoginFailed, false, true},
		// A PIN refusal joined with a device fault is still a refusal:
		// never retried.
		{"PIN refused and device", errors.Join(tokenerr.ErrDevice, tokenerr.ErrPINIncorrect), tokenerr.ErrPINIncorrect, false, true},

		{"closed by this process", tokenerr.ErrClosed, tokenerr.ErrClosed, false, false},
		{"key not found", tokenerr.ErrKeyNotFound, tokenerr.ErrKeyNotFound, false, false},
		{"ambiguous token", tokenerr.ErrAmbiguousToken, tokenerr.ErrAmbiguousToken, false, false},
		{"unsupported", tokenerr.ErrUnsupported, tokenerr.ErrUnsupported, false, false},
		{"module", tokenerr.ErrModule, tokenerr.ErrModule, false, false},
		{"module not found", tokenerr.ErrModuleNotFound, tokenerr.ErrModuleNotFound, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tokenerr.Kind(tc.err); got != tc.kind {
				t.Errorf("Kind(%v) = %v, want %v", tc.err, got, tc.kind)
			}
			if got := tokenerr.Transient(tc.err); got != tc.transient {
				t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.transient)
			}
			if got := tokenerr.IsPINRefused(tc.err); got != tc.pinRefused {
				t.Errorf("IsPINRefused(%v) = %v, want %v", tc.err, got, tc.pinRefused)
			}
		})
	}
}

// TestSentinelsDistinct: every sentinel is its own kind, with its own text.
func TestSentinelsDistinct(t *testing.T) {
	all := []error{
		tokenerr.ErrModuleNotFound, tokenerr.ErrNotModule, tokenerr.ErrModule, tokenerr.ErrClosed,
		tokenerr.ErrSlotNotFound, tokenerr.ErrNoToken, tokenerr.ErrTokenNotFound, tokenerr.ErrAmbiguousToken,
		tokenerr.ErrTokenRemoved, tokenerr.ErrSessionClosed, tokenerr.ErrDevice, tokenerr.ErrWriteProtected,
		tokenerr.ErrPINRequired, tokenerr.ErrPINIncorrect, tokenerr.ErrPINLocked, tokenerr.ErrPINFinalTry,
		tokenerr.ErrPINExpired, tokenerr.ErrPINInvalid, tokenerr.ErrNotLoggedIn, tokenerr.ErrLoginFailed,
		tokenerr.ErrObjectGone, tokenerr.ErrKeyNotFound, tokenerr.ErrAmbiguousKey, tokenerr.ErrKeyCannotSign,
		tokenerr.ErrUnsupported,
	}
	texts := map[string]bool{}
	for _, k := range all {
		if got := tokenerr.Kind(k); got != k {
			t.Errorf("Kind(%v) = %v", k, got)
		}
		if texts[k.Error()] {
			t.Errorf("two sentinels say %q", k.Error())
		}
		texts[k.Error()] = true
	}
}

func ExampleTransient() {
	err := fmt.Errorf("signing the grant: %w", tokenerr.ErrTokenRemoved)
	fmt.Println(tokenerr.Transient(err), tokenerr.IsPINRefused(err))

	err = fmt.Errorf("login: %w", tokenerr.ErrPINIncorrect)
	fmt.Println(tokenerr.Transient(err), tokenerr.IsPINRefused(err))
	// Output:
	// true false
	// false true
}
