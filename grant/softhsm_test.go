//go:build cgo

// SoftHSM2 needs cgo (package softhsm loads it through miekg/pkcs11);
// the rest of grant's tests sign with keys in memory and need none.

package grant_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"os"
	"sync"
	"testing"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

func TestMain(m *testing.M) { os.Exit(softhsm.Main(m)) }

// TestTokenFromSoftHSM2 gets tokens with grants signed on a SoftHSM2 token
// through p11.TokenSigner: x5c with the chain read from the token, and
// kid with the key registered on the client.
func TestTokenFromSoftHSM2(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{ID: []byte{1}, Label: "Authentication"}, softhsm.LeafOptions{})
	s, err := p11.Open(p11.Config{
		Module: tok.Module, Token: hsm.TokenSelector{Label: tok.Label},
		PIN: hsm.StaticPIN([]byte(tok.PIN)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kid, err := signer.Thumbprint(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	srv := emulator.NewTest(t, emulator.Config{
		Roots: []*x509.Certificate{ca.Root},
		Clients: []emulator.Client{{
			ID: "hsm-client", OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{"test:read"},
			Keys: map[string]crypto.PublicKey{kid: s.Public()},
		}},
	})
	env := grant.Environment{Issuer: srv.Issuer(), TokenEndpoint: srv.TokenURL()}
	for _, tc := range []struct {
		name string
		kid  string
	}{{"x5c", ""}, {"kid", kid}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &grant.Config{ClientID: "hsm-client", Signer: s, KeyID: tc.kid, Environment: env}
			got, err := cfg.Exchange(context.Background(), grant.Request{Scopes: []string{"test:read"}})
			if err != nil {
				t.Fatal(err)
			}
			if got.AccessToken == "" || got.Scope != "test:read" {
				t.Fatalf("token = %+v", got)
			}
		})
	}

	// Many goroutines through one cold TokenSource: one exchange, and
	// signatures on the token from several sessions at once.
	before := srv.Stats().Issued
	cfg := &grant.Config{ClientID: "hsm-client", Signer: s, Environment: env}
	src := cfg.TokenSource(context.Background(), grant.Request{Scopes: []string{"test:read"}})
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := src.Token(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := srv.Stats().Issued - before; n != 1 {
		t.Fatalf("100 goroutines on a cold source caused %d exchanges, want 1", n)
	}
}
