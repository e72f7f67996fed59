package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"math/big"
	"strings"
	"testing"
)

// rsaPublic returns an RSA public key with a modulus of the given size; it
// need not be a product of primes for CheckKey.
func rsaPublic(bits int) *rsa.PublicKey {
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	return &rsa.PublicKey{N: n.Add(n, big.NewInt(1)), E: 65537}
}

func TestCheckKey(t *testing.T) {
	edPub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		pub     crypto.PublicKey
		wantErr error
		wantMsg []string
	}{
		{"RSA 2048", rsaPublic(2048), nil, nil},
		{"RSA 4096", rsaPublic(4096), nil, nil},
		{"RSA 1024", rsaPublic(1024), ErrKeyTooSmall, []string{"1024 bits", "2048"}},
		{"RSA 2047", rsaPublic(2047), ErrKeyTooSmall, []string{"2047 bits"}},
		{"empty RSA", &rsa.PublicKey{}, ErrUnsupportedKey, nil},
		{"P-256", testECKey(t, elliptic.P256()).Public(), nil, nil},
		{"P-384", testECKey(t, elliptic.P384()).Public(), nil, nil},
		{"P-224", testECKey(t, elliptic.P224()).Public(), ErrUnsupportedKey, []string{"P-224"}},
		{"P-521", testECKey(t, elliptic.P521()).Public(), ErrUnsupportedKey, []string{"P-521"}},
		{"Ed25519", edPub, ErrUnsupportedKey, []string{"ed25519"}},
		{"nil", nil, ErrUnsupportedKey, nil},
		{"nil ECDSA", (*ecdsa.PublicKey)(nil), ErrUnsupportedKey, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckKey(tt.pub)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("CheckKey = %v, want %v", err, tt.wantErr)
			}
			for _, s := range tt.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("CheckKey = %q, want it to contain %q", err, s)
				}
			}
		})
	}
}

func TestMatchCertificate(t *testing.T) {
	p := newTestPKI(t)
	if err := MatchCertificate(p.leafKey.Public(), p.leaf); err != nil {
		t.Errorf("MatchCertificate(leaf key, leaf) = %v", err)
	}
	if err := MatchCertificate(p.interKey.Public(), p.inter); err != nil {
		t.Errorf("MatchCertificate(intermediate key, intermediate) = %v", err)
	}

	err := MatchCertificate(testRSAKey(t, 1).Public(), p.leaf)
	if !errors.Is(err, ErrCertificateMismatch) {
		t.Fatalf("MatchCertificate(other key, leaf) = %v, want ErrCertificateMismatch", err)
	}
	for _, s := range []string{"CN=TEST VIRKSOMHET AS", p.leaf.SerialNumber.Text(16)} {
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(s)) {
			t.Errorf("MatchCertificate = %q, want it to name %q", err, s)
		}
	}

	if err := MatchCertificate(p.interKey.Public(), p.leaf); !errors.Is(err, ErrCertificateMismatch) {
		t.Errorf("MatchCertificate(EC key, RSA leaf) = %v, want ErrCertificateMismatch", err)
	}
	if err := MatchCertificate(p.leafKey.Public(), nil); !errors.Is(err, ErrCertificateMismatch) {
		t.Errorf("MatchCertificate(key, nil) = %v, want ErrCertificateMismatch", err)
	}
}
