//go:build cgo

package main

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/mp-hsm/mp-hsm/internal/p11spy"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// minimumCalls is the fewest PKCS#11 calls, as OpenSC's pkcs11-spy counts
// them, with which a bare program does the job of `mp-hsm token` on a
// module with slots slots and a token holding certs certificates: find the
// token by label, log in, find the authentication certificate and the
// chain, find its private key and sign once.
//
//	C_GetFunctionList, C_Initialize            2  load the module
//	C_GetSlotList                              2  count, then list (the PKCS#11 two-call rule for output of unknown length)
//	C_GetTokenInfo                         slots  one per slot, to find the label
//	C_OpenSession, C_Login                     2
//	C_FindObjects{Init,,Final} certificates    3  one search
//	C_GetAttributeValue                  2×certs  length, then value: CKA_ID and CKA_VALUE of each
//	C_FindObjects{Init,,Final} private key     3  the key with the chosen certificate's CKA_ID
//	C_SignInit, C_Sign                         3  C_Sign twice: length, then signature
//	C_Logout, C_CloseSession, C_Finalize       3  PKCS#11 does not say C_Finalize ends them
//
// That is 18 + slots + 2×certs: 26 for one card (2 slots, SoftHSM2's free
// one included, and 3 certificates), the bare program's count in issue 12.
// The bare program reads no attribute of the private key: it trusts the
// key with its certificate's CKA_ID to sign without CKA_ALWAYS_AUTHENTICATE.
// mp-hsm reads each object's attributes in one C_GetAttributeValue call
// with buffers that fit (1 call per certificate, where the bare program
// makes 2), reads each private key once (1 call: CKA_SIGN, the key type,
// CKA_ALWAYS_AUTHENTICATE, the modulus to match the certificate by public
// key rather than by CKA_ID), guards the PIN with the flags it read when it
// found the token by label (no second C_GetTokenInfo), signs on a session
// of its own (1 call to open), does not log out and ends both sessions with
// one C_CloseAllSessions before C_Finalize (it initialised the module, so
// no other code has sessions on it): 25 for one card, one fewer than the
// bare program.
func minimumCalls(slots, certs int) int { return 18 + slots + 2*certs }

// mphsmCalls is the ceiling on `mp-hsm token`'s calls: the count above,
// one fewer than minimumCalls (27 before the PIN flags were taken from
// the search and the sessions closed in one call; 32 before attributes
// were read in one call each; the target was 1.1 × the minimum).
func mphsmCalls(slots, certs int) int { return minimumCalls(slots, certs) - 1 }

// TestE2ETokenCallCount runs `mp-hsm token` as a user does, through
// pkcs11-spy in front of SoftHSM2, against the emulator: the calls it makes
// must stay within mphsmCalls, with one C_GetTokenInfo per slot (none
// again for the PIN guard) and one C_CloseAllSessions in place of the
// C_CloseSession calls. The per-function counts are printed on failure
// (and recorded for make bench, see p11spy.Record).
func TestE2ETokenCallCount(t *testing.T) {
	t.Parallel()
	fx := e2e(t)
	spy := p11spy.Path(t)
	srv := fx.emulator(t)
	for _, tc := range []struct {
		name  string
		env   func(testing.TB, *softhsm.Token, ...string) []string
		slots int
	}{
		{"one card", fx.envAlone, 2}, // the card and SoftHSM2's free slot
		{"three tokens", fx.env, 4},  // the card, two other tokens and the free slot
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "spy.log")
			env := tc.env(t, fx.card, append(p11spy.Env(fx.card.Module, log), "MP_HSM_MODULE="+spy)...)
			res := runCLI(t, env, e2eTokenArgs(srv)...)
			e2eWantOK(t, res)
			e2eAccessToken(t, srv, res.stdout)
			counts := p11spy.Counts(p11spy.Read(t, log))
			total, min := p11spy.Total(counts), minimumCalls(tc.slots, 3)
			bound := mphsmCalls(tc.slots, 3)
			t.Logf("%d calls, minimum %d, bound %d: %s", total, min, bound, p11spy.Format(counts))
			if total > bound {
				t.Errorf("mp-hsm token made %d PKCS#11 calls, more than its ceiling %d (bare minimum %d): %s", total, bound, min, p11spy.Format(counts))
			}
			if counts["C_GetTokenInfo"] != tc.slots {
				t.Errorf("%d C_GetTokenInfo calls, want %d (one per slot; the PIN guard takes the flags read then)", counts["C_GetTokenInfo"], tc.slots)
			}
			if counts["C_CloseAllSessions"] != 1 || counts["C_CloseSession"] != 0 {
				t.Errorf("%d C_CloseAllSessions and %d C_CloseSession calls, want 1 and 0", counts["C_CloseAllSessions"], counts["C_CloseSession"])
			}
			if counts["C_Login"] != 1 {
				t.Errorf("%d C_Login calls, want exactly 1", counts["C_Login"])
			}
			p11spy.Record(t, fmt.Sprintf("token slots=%d total=%d minimum=%d bound=%d %s", tc.slots, total, min, bound, p11spy.Format(counts)))
		})
	}
	// The minimum is a program's count, not only arithmetic:
	// internal/p11bare, BenchmarkTokenRPC's baseline, makes exactly it.
	t.Run("bare program", func(t *testing.T) {
		log := filepath.Join(t.TempDir(), "spy.log")
		env := fx.envAlone(t, fx.card, append(p11spy.Env(fx.card.Module, log), "MP_HSM_MODULE="+spy)...)
		manualRun(t, env, bareBinary(t), "-token-label", "e2e-card")
		counts := p11spy.Counts(p11spy.Read(t, log))
		if total, min := p11spy.Total(counts), minimumCalls(2, 3); total != min {
			t.Errorf("internal/p11bare made %d PKCS#11 calls, want the minimum %d: %s", total, min, p11spy.Format(counts))
		}
	})
}
