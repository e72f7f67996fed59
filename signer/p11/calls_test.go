//go:build cgo

package p11_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/p11spy"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// TestCallsPerGrant counts the PKCS#11 calls of the daemon's path for an
// uncached request: a grant signed by a p11 signer that is already open
// (the daemon keeps it) and has signed once (its signing session is open).
// With OpenSC's pkcs11-spy in front of SoftHSM2, loaded in this process,
// each grant must cost exactly its signature: one C_SignInit and the two
// C_Sign calls miekg/pkcs11 makes (the length, then the signature), and
// for a key with CKA_ALWAYS_AUTHENTICATE one C_Login(CKU_CONTEXT_SPECIFIC);
// no attribute read, object search, token information or session.
//
// It sets the spy's variables with t.Setenv, so it is not parallel, and it
// is the only test of this package that loads the spy.
func TestCallsPerGrant(t *testing.T) {
	spy := p11spy.Path(t)
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{ID: []byte{1}, Label: "Authentication"}, softhsm.LeafOptions{})
	pub := tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{2}, Label: "Signing", AlwaysAuthenticate: true})
	leaf, err := ca.IssueLeaf(pub, softhsm.LeafOptions{Usage: softhsm.Signing})
	if err != nil {
		t.Fatal(err)
	}
	tok.WriteCertificate(t, leaf, []byte{2}, "Signing")
	log := filepath.Join(t.TempDir(), "spy.log")
	for _, kv := range p11spy.Env(tok.Module, log) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	const n = 20
	for _, tc := range []struct {
		name        string
		id          byte
		contextAuth int // C_Login(CKU_CONTEXT_SPECIFIC) per grant
	}{
		{"authentication key", 1, 0},
		{"always-authenticate key", 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := p11.Open(p11.Config{
				Module: spy,
				Token:  hsm.TokenSelector{Label: tok.Label},
				Key:    hsm.KeySelector{ID: []byte{tc.id}},
				PIN:    hsm.StaticPIN([]byte(tok.PIN)),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			cfg := &grant.Config{ClientID: "calls-client", Signer: s, Environment: grant.Test}
			req := grant.Request{Scopes: []string{"calls:read"}}
			if _, err := cfg.Grant(req); err != nil { // warm-up: opens the signing session
				t.Fatal(err)
			}
			before := len(p11spy.Read(t, log))
			for range n {
				if _, err := cfg.Grant(req); err != nil {
					t.Fatal(err)
				}
			}
			calls := p11spy.Read(t, log)[before:]
			counts := p11spy.Counts(calls)
			want := map[string]int{"C_SignInit": n, "C_Sign": 2 * n}
			if tc.contextAuth > 0 {
				want["C_Login"] = tc.contextAuth * n
			}
			if p11spy.Format(counts) != p11spy.Format(want) {
				t.Errorf("%d grants made %s, want %s", n, p11spy.Format(counts), p11spy.Format(want))
			}
			for _, c := range calls {
				if c.Name == "C_Login" && !strings.Contains(c.Text, "CKU_CONTEXT_SPECIFIC") {
					t.Errorf("a C_Login that is not context-specific:\n%s", c.Text)
				}
			}
			t.Logf("%d grants: %s", n, p11spy.Format(counts))
			p11spy.Record(t, fmt.Sprintf("grant key=%s grants=%d total=%d %s", strings.ReplaceAll(tc.name, " ", "-"),
				n, p11spy.Total(counts), p11spy.Format(counts)))
		})
	}
}
