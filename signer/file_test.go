package signer

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/mp-hsm/mp-hsm/internal/testexec"
)

func pemBlock(t testing.TB, typ string, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func certsPEM(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

func pkcs8PEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock(t, "PRIVATE KEY", der)
}

// checkSigns checks that s signs and that the signature verifies with the
// public key of the leaf, if any.
func checkSigns(t *testing.T, s *FileSigner) {
	t.Helper()
	alg, err := DefaultAlgorithm(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	m, _ := Method(alg)
	sig, err := m.Sign("header.claims", s)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	var pub crypto.PublicKey = s.Public()
	if chain := s.Chain(); len(chain) > 0 {
		pub = chain[0].PublicKey
	}
	if err := m.Verify("header.claims", sig, pub); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestFromPEM(t *testing.T) {
	p := newTestPKI(t)
	ecKey := testECKey(t, elliptic.P256())
	ecCert := issue(t, certOpts{cn: "EC VIRKSOMHET"}, ecKey.Public(), p.inter, p.interKey)
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	bundle := certsPEM(p.root, p.leaf, ecCert, p.inter) // any order, with root and another leaf

	tests := []struct {
		name      string
		key       []byte
		chain     []byte
		wantChain []*x509.Certificate
	}{
		{"PKCS#8 RSA", pkcs8PEM(t, p.leafKey), bundle, []*x509.Certificate{p.leaf, p.inter}},
		{"PKCS#1 RSA", pemBlock(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(p.leafKey)), bundle, []*x509.Certificate{p.leaf, p.inter}},
		{"SEC 1 EC", pemBlock(t, "EC PRIVATE KEY", sec1), bundle, []*x509.Certificate{ecCert, p.inter}},
		{"PKCS#8 EC", pkcs8PEM(t, ecKey), bundle, []*x509.Certificate{ecCert, p.inter}},
		{"no chain", pkcs8PEM(t, p.leafKey), nil, nil},
		{"DER certificate", pkcs8PEM(t, p.leafKey), p.leaf.Raw, []*x509.Certificate{p.leaf}},
		{"EC PARAMETERS block first", append(pemBlock(t, "EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}), pemBlock(t, "EC PRIVATE KEY", sec1)...), nil, nil},
		{"certificates in the key file", append(pkcs8PEM(t, p.leafKey), certsPEM(p.inter, p.leaf)...), nil, []*x509.Certificate{p.leaf, p.inter}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := FromPEM(tt.key, tt.chain)
			if err != nil {
				t.Fatal(err)
			}
			if !sameChain(s.Chain(), tt.wantChain) {
				t.Errorf("Chain = %s, want %s", names(s.Chain()), names(tt.wantChain))
			}
			checkSigns(t, s)
		})
	}
}

func TestFromPEMErrors(t *testing.T) {
	p := newTestPKI(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	legacyEncrypted := pem.EncodeToMemory(&pem.Block{
		Type:    "RSA PRIVATE KEY",
		Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF"},
		Bytes:   []byte("ciphertext"),
	})
	leafKey := pkcs8PEM(t, p.leafKey)

	tests := []struct {
		name    string
		key     []byte
		chain   []byte
		wantErr error
		wantMsg string
	}{
		{"small key", pkcs8PEM(t, small), nil, ErrKeyTooSmall, "1024 bits"},
		{"Ed25519", pkcs8PEM(t, edKey), nil, ErrUnsupportedKey, "ed25519"},
		{"PKCS#8 encrypted", pemBlock(t, "ENCRYPTED PRIVATE KEY", []byte("ciphertext")), nil, ErrEncryptedKey, "openssl pkey"},
		{"legacy encrypted", legacyEncrypted, nil, ErrEncryptedKey, "decrypt it first"},
		{"only CA certificates", leafKey, certsPEM(p.inter, p.root), ErrCertificateMismatch, "Test Class 3 CA"},
		{"another key's certificate", pkcs8PEM(t, testRSAKey(t, 1)), certsPEM(p.inter, p.leaf), ErrCertificateMismatch, "TEST VIRKSOMHET AS"},
		{"no key", certsPEM(p.leaf), nil, nil, "no private key in the PEM input (found CERTIFICATE)"},
		{"not PEM", []byte("hello"), nil, nil, "no PEM data"},
		{"two keys", append(append([]byte(nil), leafKey...), leafKey...), nil, nil, "more than one private key"},
		{"corrupt key", pemBlock(t, "PRIVATE KEY", []byte{0x30, 0x00}), nil, nil, "reading PRIVATE KEY"},
		{"corrupt chain", leafKey, []byte("junk"), nil, "neither PEM nor a DER certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := FromPEM(tt.key, tt.chain)
			if err == nil {
				t.Fatalf("FromPEM = %v, want an error", s)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("FromPEM = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("FromPEM = %q, want it to contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestFromFiles(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "key.pem")
	chainPath := filepath.Join(dir, "chain.pem")
	if err := os.WriteFile(keyPath, pkcs8PEM(t, p.leafKey), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(chainPath, certsPEM(p.inter, p.leaf), 0o644); err != nil {
		t.Fatal(err)
	}

	s, err := FromFiles(keyPath, chainPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := []*x509.Certificate{p.leaf, p.inter}; !sameChain(s.Chain(), want) {
		t.Errorf("Chain = %s, want %s", names(s.Chain()), names(want))
	}
	if s, err = FromFiles(keyPath, ""); err != nil || len(s.Chain()) != 0 {
		t.Errorf("FromFiles(key, \"\") = %v, %v; want no chain", s, err)
	}
	if _, err := FromFiles(filepath.Join(dir, "missing.pem"), ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("FromFiles(missing key) = %v, want fs.ErrNotExist", err)
	}
	if _, err := FromFiles(keyPath, filepath.Join(dir, "missing.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("FromFiles(missing chain) = %v, want fs.ErrNotExist", err)
	}
	_, err = FromFiles(chainPath, "")
	if err == nil || !strings.Contains(err.Error(), chainPath) {
		t.Errorf("FromFiles(certificates as key) = %v, want an error naming %s", err, chainPath)
	}
}

func TestFromPKCS12(t *testing.T) {
	p := newTestPKI(t)
	const password = "correct horse battery staple"
	encoders := map[string]*pkcs12.Encoder{
		"Modern":     pkcs12.Modern,
		"Modern2026": pkcs12.Modern2026,
		"LegacyRC2":  pkcs12.LegacyRC2,
		"LegacyDES":  pkcs12.LegacyDES,
	}
	for name, enc := range encoders {
		t.Run(name, func(t *testing.T) {
			// The root first and the intermediate last, as some exports do.
			data, err := enc.Encode(p.leafKey, p.leaf, []*x509.Certificate{p.root, p.inter}, password)
			if err != nil {
				t.Fatal(err)
			}
			s, err := FromPKCS12(data, password)
			if err != nil {
				t.Fatal(err)
			}
			if want := []*x509.Certificate{p.leaf, p.inter}; !sameChain(s.Chain(), want) {
				t.Errorf("Chain = %s, want %s", names(s.Chain()), names(want))
			}
			checkSigns(t, s)

			_, err = FromPKCS12(data, "Tr0ub4dor&3")
			if !errors.Is(err, ErrPKCS12Password) {
				t.Fatalf("wrong password: %v, want ErrPKCS12Password", err)
			}
			if strings.Contains(err.Error(), "Tr0ub4dor") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}

	t.Run("leaf not first", func(t *testing.T) {
		// DecodeChain takes the first certificate for the leaf; BuildChain
		// does not trust that.
		data, err := pkcs12.Modern.Encode(p.leafKey, p.inter, []*x509.Certificate{p.root, p.leaf}, password)
		if err != nil {
			t.Fatal(err)
		}
		s, err := FromPKCS12(data, password)
		if err != nil {
			t.Fatal(err)
		}
		if want := []*x509.Certificate{p.leaf, p.inter}; !sameChain(s.Chain(), want) {
			t.Errorf("Chain = %s, want %s", names(s.Chain()), names(want))
		}
	})
	t.Run("certificate of another key", func(t *testing.T) {
		data, err := pkcs12.Modern.Encode(testRSAKey(t, 1), p.leaf, []*x509.Certificate{p.inter}, password)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := FromPKCS12(data, password); !errors.Is(err, ErrCertificateMismatch) {
			t.Errorf("FromPKCS12 = %v, want ErrCertificateMismatch", err)
		}
	})
	t.Run("small key", func(t *testing.T) {
		small, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		cert := issue(t, certOpts{cn: "small"}, small.Public(), p.inter, p.interKey)
		data, err := pkcs12.Modern.Encode(small, cert, nil, password)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := FromPKCS12(data, password); !errors.Is(err, ErrKeyTooSmall) {
			t.Errorf("FromPKCS12 = %v, want ErrKeyTooSmall", err)
		}
	})
	t.Run("not PKCS#12", func(t *testing.T) {
		_, err := FromPKCS12([]byte("junk"), password)
		if err == nil || errors.Is(err, ErrPKCS12Password) {
			t.Errorf("FromPKCS12(junk) = %v, want an error other than ErrPKCS12Password", err)
		}
	})
	t.Run("file", func(t *testing.T) {
		data, err := pkcs12.Modern.Encode(p.leafKey, p.leaf, []*x509.Certificate{p.inter}, password)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "virksomhet.p12")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := FromPKCS12File(path, password); err != nil {
			t.Error(err)
		}
		if _, err := FromPKCS12File(path, "wrong"); !errors.Is(err, ErrPKCS12Password) || !strings.Contains(err.Error(), path) {
			t.Errorf("FromPKCS12File(wrong password) = %v, want ErrPKCS12Password naming the file", err)
		}
		if _, err := FromPKCS12File(path+".missing", password); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("FromPKCS12File(missing) = %v, want fs.ErrNotExist", err)
		}
	})
}

// TestFromPKCS12OpenSSL reads a PKCS#12 file written by the openssl command,
// as users export soft certificates; it needs openssl (make deps).
func TestFromPKCS12OpenSSL(t *testing.T) {
	opensslPath := testexec.Tool(t, "openssl", "openssl")
	p := newTestPKI(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	keyPath := write("key.pem", pkcs8PEM(t, p.leafKey))
	certPath := write("leaf.pem", certsPEM(p.leaf))
	caPath := write("ca.pem", certsPEM(p.root, p.inter))
	p12Path := filepath.Join(dir, "out.p12")
	cmd := testexec.Command(t, 0, opensslPath, "pkcs12", "-export", "-inkey", keyPath, "-in", certPath,
		"-certfile", caPath, "-name", "virksomhet", "-passout", "pass:secret", "-out", p12Path)
	cmd.Env = testexec.Env(dir)
	if res := testexec.Run(t, cmd); res.Code != 0 {
		t.Fatalf("openssl pkcs12 -export: %s", res)
	}
	s, err := FromPKCS12File(p12Path, "secret")
	if err != nil {
		t.Fatal(err)
	}
	if want := []*x509.Certificate{p.leaf, p.inter}; !sameChain(s.Chain(), want) {
		t.Errorf("Chain = %s, want %s", names(s.Chain()), names(want))
	}
	checkSigns(t, s)
}

func TestNewFileSigner(t *testing.T) {
	p := newTestPKI(t)
	chain := []*x509.Certificate{p.leaf, p.inter}
	s, err := NewFileSigner(p.leafKey, chain)
	if err != nil {
		t.Fatal(err)
	}
	chain[1] = p.root
	if !sameChain(s.Chain(), []*x509.Certificate{p.leaf, p.inter}) {
		t.Errorf("Chain changed with the caller's slice: %s", names(s.Chain()))
	}
	if !p.leafKey.PublicKey.Equal(s.Public()) {
		t.Error("Public is not the key's")
	}
	digest := sha256.Sum256([]byte("x"))
	sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(&p.leafKey.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
		t.Error(err)
	}

	if s, err := NewFileSigner(p.leafKey, nil); err != nil || s.Chain() != nil {
		t.Errorf("NewFileSigner(key, nil) = %v, %v; want an empty chain", s, err)
	}
	if _, err := NewFileSigner(p.leafKey, []*x509.Certificate{p.inter, p.leaf}); !errors.Is(err, ErrCertificateMismatch) {
		t.Errorf("NewFileSigner(intermediate first) = %v, want ErrCertificateMismatch", err)
	}
	if _, err := NewFileSigner(nil, nil); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("NewFileSigner(nil) = %v, want ErrUnsupportedKey", err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := NewFileSigner(edKey, nil); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("NewFileSigner(Ed25519) = %v, want ErrUnsupportedKey", err)
	}
}
