//go:build cgo

package hsm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// openRW opens tok read-write, logged in.
func openRW(t testing.TB, tok *softhsm.Token) *hsm.Token {
	t.Helper()
	m, err := hsm.Open(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ht, err := m.OpenSlot(hsm.Slot{ID: tok.SlotID}, hsm.TokenOptions{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ht.Close() })
	if err := ht.Login(hsm.StaticPIN([]byte(tok.PIN)), hsm.LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	return ht
}

func TestGenerateKey(t *testing.T) {
	tok := softhsm.New(t)
	ht := openRW(t, tok)
	for _, name := range []string{"rsa:2048", "ec:p256"} {
		t.Run(name, func(t *testing.T) {
			spec, err := hsm.ParseKeySpec(name)
			if err != nil {
				t.Fatal(err)
			}
			key, err := ht.GenerateKey(hsm.GenerateOptions{Label: "gen " + name, Spec: spec})
			if err != nil {
				t.Fatal(err)
			}
			info := key.Info()
			if info.Label != "gen "+name || len(info.ID) != 8 || info.Bits != spec.Bits || info.Type != spec.Type {
				t.Errorf("key = %v (%d bits), want label %q, an 8-byte id, %v", info, info.Bits, "gen "+name, spec)
			}
			switch spec.Type {
			case hsm.KeyTypeRSA:
				if _, ok := key.Public().(*rsa.PublicKey); !ok {
					t.Errorf("public key %T", key.Public())
				}
			case hsm.KeyTypeEC:
				if _, ok := key.Public().(*ecdsa.PublicKey); !ok {
					t.Errorf("public key %T", key.Public())
				}
			}
			priv, err := tok.Attributes(pkcs11.CKO_PRIVATE_KEY, info.ID,
				pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_PRIVATE, pkcs11.CKA_SIGN, pkcs11.CKA_TOKEN,
				pkcs11.CKA_ALWAYS_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE)
			if err != nil {
				t.Fatal(err)
			}
			for ty, want := range map[uint]bool{
				pkcs11.CKA_SENSITIVE: true, pkcs11.CKA_EXTRACTABLE: false, pkcs11.CKA_PRIVATE: true,
				pkcs11.CKA_SIGN: true, pkcs11.CKA_TOKEN: true, pkcs11.CKA_ALWAYS_SENSITIVE: true, pkcs11.CKA_NEVER_EXTRACTABLE: true,
			} {
				if got := len(priv[ty]) == 1 && priv[ty][0] == 1; got != want {
					t.Errorf("private key attribute %#x = %v, want %v", ty, priv[ty], want)
				}
			}
			pub, err := tok.Attributes(pkcs11.CKO_PUBLIC_KEY, info.ID, pkcs11.CKA_VERIFY, pkcs11.CKA_TOKEN, pkcs11.CKA_LABEL)
			if err != nil {
				t.Fatal(err)
			}
			if pub[pkcs11.CKA_VERIFY][0] != 1 || pub[pkcs11.CKA_TOKEN][0] != 1 || string(pub[pkcs11.CKA_LABEL]) != info.Label {
				t.Errorf("public key attributes %v", pub)
			}
			// The key signs, and the signature verifies with its public key.
			digest := sha256.Sum256([]byte("generated"))
			sig, err := key.Sign(nil, digest[:], crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			switch p := key.Public().(type) {
			case *rsa.PublicKey:
				err = rsa.VerifyPKCS1v15(p, crypto.SHA256, digest[:], sig)
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(p, digest[:], sig) {
					err = errors.New("ECDSA signature does not verify")
				}
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
}

func TestGenerateKeyRefusals(t *testing.T) {
	tok := softhsm.New(t)
	tok.GenerateRSA(t, 2048, softhsm.KeyOptions{ID: []byte{0x01}, Label: "taken"})
	ht := openRW(t, tok)
	count := func() int {
		ks, err := ht.Keys()
		if err != nil {
			t.Fatal(err)
		}
		return len(ks)
	}
	for _, tc := range []struct {
		name string
		o    hsm.GenerateOptions
		want error
	}{
		{"label taken", hsm.GenerateOptions{Label: "taken"}, hsm.ErrObjectExists},
		{"id taken", hsm.GenerateOptions{Label: "free", ID: []byte{0x01}}, hsm.ErrObjectExists},
		{"no label", hsm.GenerateOptions{}, tokenerr.ErrUnsupported},
		{"bad spec", hsm.GenerateOptions{Label: "x", Spec: hsm.KeySpec{Type: hsm.KeyTypeRSA, Bits: 1024}}, tokenerr.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ht.GenerateKey(tc.o); !errors.Is(err, tc.want) {
				t.Fatalf("GenerateKey = %v, want %v", err, tc.want)
			}
			if n := count(); n != 1 {
				t.Errorf("%d keys on the token after a refusal, want 1", n)
			}
		})
	}

	t.Run("read-only", func(t *testing.T) {
		ro := open(t, tok, tok.PIN)
		if _, err := ro.GenerateKey(hsm.GenerateOptions{Label: "ro"}); !errors.Is(err, hsm.ErrReadOnly) {
			t.Fatalf("GenerateKey on a read-only token = %v, want ErrReadOnly", err)
		}
	})
	t.Run("not logged in", func(t *testing.T) {
		m, err := hsm.Open(tok.Module)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		// Another process-wide login session exists (ht), but this Token
		// never logged in: GenerateKey wants its own Login.
		nt, err := m.OpenSlot(hsm.Slot{ID: tok.SlotID}, hsm.TokenOptions{ReadWrite: true})
		if err != nil {
			t.Fatal(err)
		}
		defer nt.Close()
		if _, err := nt.GenerateKey(hsm.GenerateOptions{Label: "nl"}); !errors.Is(err, tokenerr.ErrNotLoggedIn) {
			t.Fatalf("GenerateKey before Login = %v, want ErrNotLoggedIn", err)
		}
	})
}

func TestParseKeySpec(t *testing.T) {
	for in, want := range map[string]string{"": "rsa:2048", "RSA:3072": "rsa:3072", "ec:p256": "ec:p256"} {
		s, err := hsm.ParseKeySpec(in)
		if err != nil || s.String() != want {
			t.Errorf("ParseKeySpec(%q) = %v, %v; want %s", in, s, err, want)
		}
	}
	for _, in := range []string{"rsa:1024", "ec:p384", "rsa"} {
		if _, err := hsm.ParseKeySpec(in); err == nil {
			t.Errorf("ParseKeySpec(%q) took it", in)
		}
	}
}

func TestWriteCertificate(t *testing.T) {
	tok := softhsm.New(t)
	ht := openRW(t, tok)
	key, err := ht.GenerateKey(hsm.GenerateOptions{Label: "leaf", ID: []byte{0x0c}})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueLeaf(key.Public(), softhsm.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ht.WriteCertificate(cert, []byte{0x0c}, "leaf"); err != nil {
		t.Fatal(err)
	}
	if err := ht.WriteCertificate(cert, []byte{0x0c}, "leaf"); !errors.Is(err, hsm.ErrObjectExists) {
		t.Errorf("second WriteCertificate = %v, want ErrObjectExists", err)
	}
	k, err := ht.FindKey(hsm.KeySelector{ID: []byte{0x0c}})
	if err != nil {
		t.Fatal(err)
	}
	if c := k.Info().Certificate; c == nil || !c.Cert.Equal(cert) || string(c.ID) != "\x0c" || c.Label != "leaf" {
		t.Errorf("the key's certificate is %+v, want the one written", c)
	}
	certs, err := ht.Certificates()
	if err != nil || len(certs) != 1 {
		t.Errorf("Certificates = %d, %v; want the one written", len(certs), err)
	}
	if err := open(t, tok, tok.PIN).WriteCertificate(cert, nil, ""); !errors.Is(err, hsm.ErrReadOnly) {
		t.Errorf("WriteCertificate on a read-only token = %v, want ErrReadOnly", err)
	}
}
