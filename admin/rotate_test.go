package admin_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

// memKey is a NewKey made in memory: the token side of Rotate is the
// CLI's (hsm); here it counts what Rotate asked of it.
type memKey struct {
	taken     error // Check's answer
	generated int
	key       *rsa.PrivateKey
}

func (m *memKey) Check() error { return m.taken }
func (m *memKey) Undo() string { return "mp-hsm key delete" }
func (m *memKey) Generate() (crypto.PublicKey, error) {
	m.generated++
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	m.key = k
	return k.Public(), err
}

// prove gets a token for client with m's key, as the CLI does with the
// new key on the token.
func prove(fx *fixture, client string, m *memKey, scope string) func(context.Context, string) error {
	return func(ctx context.Context, kid string) error {
		s, err := signer.NewFileSigner(m.key, nil)
		if err != nil {
			return err
		}
		cfg := &grant.Config{ClientID: client, Signer: s, KeyID: kid,
			Environment: grant.Environment{Issuer: fx.srv.Issuer(), TokenEndpoint: fx.srv.TokenURL()}}
		_, err = cfg.Exchange(ctx, grant.Request{Scopes: []string{scope}})
		return err
	}
}

func TestRotate(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	m := &memKey{}
	got, err := fx.api.Rotate(ctx, admin.Rotation{ClientID: "app", Key: m, Prove: prove(fx, "app", m, "test:read"), Remove: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Removed != "k1" || kids(got.Set) != got.Kid || m.generated != 1 {
		t.Fatalf("Rotate = %+v (set %s), want the new key alone", got, kids(got.Set))
	}
	// A proof that fails: the new key stays registered, nothing removed,
	// and the error shows the set read back and how to undo.
	m2 := &memKey{}
	_, err = fx.api.Rotate(ctx, admin.Rotation{ClientID: "app", Key: m2, Prove: prove(fx, "app", m2, "test:none"), Remove: got.Kid})
	var ce *admin.ChangeError
	var te *grant.TokenError
	if !errors.As(err, &ce) || !errors.As(err, &te) || ce.State == nil || len(ce.State.Keys) != 2 ||
		!strings.Contains(err.Error(), "nothing was removed") || !strings.Contains(err.Error(), "mp-hsm admin keys remove --client-id app --kid ") {
		t.Fatalf("Rotate with a failing proof = %v, want a *ChangeError with both keys and the undo", err)
	}
}

// TestRotateChecksFirst: every refusal that can come before the first
// change comes before the key is made: an unknown kid to remove, a full
// set, credentials that cannot change keys, a label the token has.
func TestRotateChecksFirst(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	readOnly := &admin.Client{BaseURL: fx.srv.AdminAPIURL(), Read: fx.api.Read,
		Write: tokens(t, fx.srv, "app", 1, "k1", admin.ScopeWrite)}
	var five []admin.Key
	for i := range 4 {
		five = append(five, jwk(t, 2, "extra-"+string(rune('a'+i))))
	}
	taken := errors.New("label taken")
	for _, tc := range []struct {
		name   string
		api    *admin.Client
		client string
		remove string
		key    *memKey
		full   bool
		want   error
		words  string
	}{
		{"unknown kid to remove", fx.api, "app", "nope", &memKey{}, false, admin.ErrKidNotFound, `no key with kid "nope" (it has: k1)`},
		{"unknown client", fx.api, "nobody", "", &memKey{}, false, nil, "HTTP 404"},
		{"no write scope", readOnly, "app", "", &memKey{}, false, nil, admin.ScopeWrite},
		{"label taken", fx.api, "app", "", &memKey{taken: taken}, false, taken, "label taken"},
		{"five keys", fx.api, "app", "k1", &memKey{}, true, admin.ErrTooManyKeys, "the new key is registered before the old is removed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.full {
				if _, err := fx.api.Add(ctx, "app", five...); err != nil {
					t.Fatal(err)
				}
			}
			before, err := fx.api.List(ctx, "app")
			if err != nil {
				t.Fatal(err)
			}
			proved := 0
			_, err = tc.api.Rotate(ctx, admin.Rotation{ClientID: tc.client, Key: tc.key, Remove: tc.remove,
				Prove: func(context.Context, string) error { proved++; return nil }})
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.words) {
				t.Fatalf("Rotate = %v, want %v saying %q", err, tc.want, tc.words)
			}
			if tc.key.generated != 0 || proved != 0 {
				t.Errorf("refused after %d keys made and %d proofs, want none", tc.key.generated, proved)
			}
			if after, err := fx.api.List(ctx, "app"); err != nil || kids(after) != kids(before) {
				t.Errorf("the set changed: %s -> %v (%v)", kids(before), after, err)
			}
		})
	}
}
