//go:build cgo

package p11_test

import (
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

func TestMain(m *testing.M) { os.Exit(softhsm.Main(m)) }

func openSigner(t testing.TB, tok *softhsm.Token, key hsm.KeySelector, extra []*x509.Certificate) (*p11.TokenSigner, error) {
	t.Helper()
	s, err := p11.Open(p11.Config{
		Module:     tok.Module,
		Token:      hsm.TokenSelector{Label: tok.Label},
		Key:        key,
		PIN:        hsm.StaticPIN([]byte(tok.PIN)),
		ExtraChain: extra,
	})
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

func sameChain(t *testing.T, got []*x509.Certificate, want ...*x509.Certificate) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("chain has %d certificates, want %d", len(got), len(want))
	}
	for i := range want {
		if !got[i].Equal(want[i]) {
			t.Fatalf("chain[%d] = %q, want %q", i, got[i].Subject, want[i].Subject)
		}
	}
}

func TestTokenSignerChainAndJWS(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	tok, leaf := softhsm.NewWithKey(t, ca, softhsm.KeyOptions{ID: []byte{1}, Label: "Authentication"}, softhsm.LeafOptions{})
	s, err := openSigner(t, tok, hsm.KeySelector{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sameChain(t, s.Chain(), leaf, ca.Intermediate)

	claims := jwt.MapClaims{"iss": "client", "exp": time.Now().Add(time.Minute).Unix()}
	for _, tc := range []struct {
		ours   *signer.SigningMethod
		theirs jwt.SigningMethod
	}{
		{signer.RS256, jwt.SigningMethodRS256},
		{signer.RS384, jwt.SigningMethodRS384},
		{signer.RS512, jwt.SigningMethodRS512},
		{signer.PS256, jwt.SigningMethodPS256},
	} {
		t.Run(tc.ours.Alg(), func(t *testing.T) {
			signed, err := jwt.NewWithClaims(tc.ours, claims).SignedString(s)
			if err != nil {
				t.Fatal(err)
			}
			// golang-jwt's own method verifies what the token signed.
			_, err = jwt.Parse(signed, func(*jwt.Token) (any, error) { return leaf.PublicKey, nil },
				jwt.WithValidMethods([]string{tc.theirs.Alg()}))
			if err != nil {
				t.Fatalf("golang-jwt does not verify the token's %s signature: %v", tc.ours.Alg(), err)
			}
		})
	}
}

func TestTokenSignerES256(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	tok, leaf := softhsm.NewWithECKey(t, ca, elliptic.P256(), softhsm.KeyOptions{ID: []byte{1}}, softhsm.LeafOptions{})
	s, err := openSigner(t, tok, hsm.KeySelector{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := jwt.NewWithClaims(signer.ES256, jwt.MapClaims{"iss": "x"}).SignedString(s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.Parse(signed, func(*jwt.Token) (any, error) { return leaf.PublicKey, nil },
		jwt.WithValidMethods([]string{"ES256"})); err != nil {
		t.Fatalf("ES256 from the token does not verify: %v", err)
	}
}

func TestTokenSignerBadKeys(t *testing.T) {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("no certificate: empty chain, no error", func(t *testing.T) {
		tok := softhsm.New(t)
		tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}})
		s, err := openSigner(t, tok, hsm.KeySelector{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Chain()) != 0 {
			t.Fatalf("chain = %d certificates, want none", len(s.Chain()))
		}
	})
	t.Run("certificate of another key", func(t *testing.T) {
		tok := softhsm.New(t)
		tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}})
		otherTok := softhsm.New(t)
		otherPub := otherTok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}})
		wrong, err := ca.IssueLeaf(otherPub, softhsm.LeafOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tok.WriteCertificate(t, wrong, []byte{1}, "wrong")
		_, err = openSigner(t, tok, hsm.KeySelector{ID: []byte{1}}, nil)
		if !errors.Is(err, signer.ErrCertificateMismatch) {
			t.Fatalf("Open with a certificate of another key = %v, want ErrCertificateMismatch", err)
		}
	})
	t.Run("RSA 1024", func(t *testing.T) {
		tok := softhsm.New(t)
		tok.GenerateRSA(t, 1024, softhsm.KeyOptions{ID: []byte{1}})
		_, err := openSigner(t, tok, hsm.KeySelector{}, nil)
		if !errors.Is(err, signer.ErrKeyTooSmall) {
			t.Fatalf("Open with RSA 1024 = %v, want ErrKeyTooSmall", err)
		}
	})
	t.Run("extra chain completes the token's", func(t *testing.T) {
		tok := softhsm.New(t)
		pub := tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}})
		leaf, err := ca.IssueLeaf(pub, softhsm.LeafOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tok.WriteCertificate(t, leaf, []byte{1}, "leaf only")
		s, err := openSigner(t, tok, hsm.KeySelector{}, []*x509.Certificate{ca.Intermediate, ca.Root})
		if err != nil {
			t.Fatal(err)
		}
		sameChain(t, s.Chain(), leaf, ca.Intermediate)
	})
	t.Run("wrong PIN", func(t *testing.T) {
		tok := softhsm.New(t)
		tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{1}})
		_, err := p11.Open(p11.Config{Module: tok.Module, Token: hsm.TokenSelector{Label: tok.Label}, PIN: hsm.StaticPIN([]byte("0000"))})
		if !errors.Is(err, tokenerr.ErrPINIncorrect) {
			t.Fatalf("Open with a wrong PIN = %v, want ErrPINIncorrect", err)
		}
	})
}
