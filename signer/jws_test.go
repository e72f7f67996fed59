package signer

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// methodKeys returns, for each method, a key it signs with.
func methodKeys(t testing.TB) map[*SigningMethod]crypto.Signer {
	t.Helper()
	rsaKey := testRSAKey(t, 0)
	return map[*SigningMethod]crypto.Signer{
		RS256: rsaKey,
		RS384: rsaKey,
		RS512: rsaKey,
		PS256: rsaKey,
		ES256: testECKey(t, elliptic.P256()),
		ES384: testECKey(t, elliptic.P384()),
	}
}

// stdlibVerify checks a JWS signature with the standard library alone.
func stdlibVerify(m *SigningMethod, pub crypto.PublicKey, signingString string, sig []byte) error {
	h := m.Hash().New()
	h.Write([]byte(signingString))
	digest := h.Sum(nil)
	switch m.Alg() {
	case "RS256", "RS384", "RS512":
		return rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), m.Hash(), digest, sig)
	case "PS256":
		return rsa.VerifyPSS(pub.(*rsa.PublicKey), m.Hash(), digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES256", "ES384":
		size := len(sig) / 2
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(pub.(*ecdsa.PublicKey), digest, r, s) {
			return errors.New("ecdsa.Verify failed")
		}
		return nil
	}
	return errors.New("no verifier for " + m.Alg())
}

func TestSignVerify(t *testing.T) {
	const signingString = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ0ZXN0In0"
	wantLen := map[*SigningMethod]int{RS256: 256, RS384: 256, RS512: 256, PS256: 256, ES256: 64, ES384: 96}
	for m, key := range methodKeys(t) {
		t.Run(m.Alg(), func(t *testing.T) {
			sig, err := m.Sign(signingString, key)
			if err != nil {
				t.Fatal(err)
			}
			if len(sig) != wantLen[m] {
				t.Errorf("len(sig) = %d, want %d", len(sig), wantLen[m])
			}
			if err := stdlibVerify(m, key.Public(), signingString, sig); err != nil {
				t.Errorf("standard library: %v", err)
			}
			for _, k := range []any{key.Public(), key} {
				if err := m.Verify(signingString, sig, k); err != nil {
					t.Errorf("Verify(%T) = %v", k, err)
				}
			}

			if err := m.Verify(signingString+"x", sig, key.Public()); !errors.Is(err, jwt.ErrSignatureInvalid) {
				t.Errorf("Verify(other string) = %v, want jwt.ErrSignatureInvalid", err)
			}
			bad := append([]byte(nil), sig...)
			bad[len(bad)/2] ^= 1
			if err := m.Verify(signingString, bad, key.Public()); !errors.Is(err, jwt.ErrSignatureInvalid) {
				t.Errorf("Verify(altered signature) = %v, want jwt.ErrSignatureInvalid", err)
			}
			if err := m.Verify(signingString, sig[1:], key.Public()); !errors.Is(err, jwt.ErrSignatureInvalid) {
				t.Errorf("Verify(short signature) = %v, want jwt.ErrSignatureInvalid", err)
			}
		})
	}
}

// TestGolangJWTInterop signs with our methods and verifies with golang-jwt's
// own registered methods, and the other way round.
func TestGolangJWTInterop(t *testing.T) {
	theirs := map[*SigningMethod]jwt.SigningMethod{
		RS256: jwt.SigningMethodRS256, RS384: jwt.SigningMethodRS384, RS512: jwt.SigningMethodRS512,
		PS256: jwt.SigningMethodPS256, ES256: jwt.SigningMethodES256, ES384: jwt.SigningMethodES384,
	}
	for m, key := range methodKeys(t) {
		t.Run(m.Alg(), func(t *testing.T) {
			s, err := NewFileSigner(key, nil)
			if err != nil {
				t.Fatal(err)
			}
			claims := jwt.MapClaims{
				"aud": "https://test.maskinporten.no/",
				"iss": "client-id",
				"iat": time.Now().Unix(),
				"exp": time.Now().Add(time.Minute).Unix(),
			}
			signed, err := jwt.NewWithClaims(m, claims).SignedString(s)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := jwt.Parse(signed, func(tok *jwt.Token) (any, error) { return s.Public(), nil },
				jwt.WithValidMethods([]string{m.Alg()}))
			if err != nil {
				t.Fatalf("golang-jwt rejects our %s token: %v", m.Alg(), err)
			}
			if tok.Method != theirs[m] {
				t.Errorf("token verified with %T, want golang-jwt's own %s", tok.Method, m.Alg())
			}

			// golang-jwt signs, we verify.
			signed, err = jwt.NewWithClaims(theirs[m], claims).SignedString(key)
			if err != nil {
				t.Fatal(err)
			}
			i := strings.LastIndexByte(signed, '.')
			sig, err := base64.RawURLEncoding.DecodeString(signed[i+1:])
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Verify(signed[:i], sig, s.Public()); err != nil {
				t.Errorf("Verify(golang-jwt's token) = %v", err)
			}
		})
	}
	if jwt.GetSigningMethod("RS256") != jwt.SigningMethodRS256 {
		t.Error("golang-jwt's registry was changed")
	}
}

func TestSignWrongKey(t *testing.T) {
	rsaKey := testRSAKey(t, 0)
	p256 := testECKey(t, elliptic.P256())
	p384 := testECKey(t, elliptic.P384())
	tests := []struct {
		m       *SigningMethod
		key     any
		wantErr []error
		wantMsg string
	}{
		{RS256, p256, []error{ErrUnsupportedKey, jwt.ErrInvalidKeyType}, "RS256 needs an RSA key, got: ECDSA P-256 key; use ES256"},
		{PS256, p384, []error{ErrUnsupportedKey, jwt.ErrInvalidKeyType}, "use ES384"},
		{ES256, rsaKey, []error{ErrUnsupportedKey, jwt.ErrInvalidKeyType}, "ES256 needs an ECDSA P-256 key, got: RSA 2048 key; use RS256"},
		{ES256, p384, []error{ErrUnsupportedKey}, "got: ECDSA P-384 key; use ES384"},
		{ES384, p256, []error{ErrUnsupportedKey}, "use ES256"},
		{ES256, testECKey(t, elliptic.P521()), []error{ErrUnsupportedKey}, "P-521"},
		{RS256, &rsaKey.PublicKey, []error{jwt.ErrInvalidKeyType}, "not a crypto.Signer"},
		{RS256, []byte("secret"), []error{jwt.ErrInvalidKeyType}, "not a crypto.Signer"},
		{RS256, nil, []error{jwt.ErrInvalidKeyType}, "not a crypto.Signer"},
	}
	for _, tt := range tests {
		_, err := tt.m.Sign("a.b", tt.key)
		for _, want := range tt.wantErr {
			if !errors.Is(err, want) {
				t.Errorf("%s.Sign(%T) = %v, want %v", tt.m.Alg(), tt.key, err, want)
			}
		}
		if err != nil && !strings.Contains(err.Error(), tt.wantMsg) {
			t.Errorf("%s.Sign(%T) = %q, want it to contain %q", tt.m.Alg(), tt.key, err, tt.wantMsg)
		}
	}

	sig, err := RS256.Sign("a.b", rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := RS256.Verify("a.b", sig, &p256.PublicKey); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("RS256.Verify(EC key) = %v, want ErrUnsupportedKey", err)
	}
	if err := RS256.Verify("a.b", sig, "key"); !errors.Is(err, jwt.ErrInvalidKeyType) {
		t.Errorf("RS256.Verify(string) = %v, want jwt.ErrInvalidKeyType", err)
	}
}

// recordingSigner records what Sign was called with, and returns sig, err.
type recordingSigner struct {
	pub  crypto.PublicKey
	sig  []byte
	err  error
	rand io.Reader
	opts crypto.SignerOpts
	n    int // digest length
}

func (r *recordingSigner) Public() crypto.PublicKey { return r.pub }

func (r *recordingSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	r.rand, r.opts, r.n = rand, opts, len(digest)
	return r.sig, r.err
}

func TestSignOptions(t *testing.T) {
	rsaPub := testRSAKey(t, 0).Public()
	derSig, _ := asn1.Marshal(struct{ R, S *big.Int }{big.NewInt(1), big.NewInt(2)})
	for m, key := range methodKeys(t) {
		r := &recordingSigner{pub: key.Public(), sig: derSig}
		if _, err := m.Sign("a.b", r); err != nil {
			t.Fatalf("%s: %v", m.Alg(), err)
		}
		if r.rand != rand.Reader {
			t.Errorf("%s: rand = %v, want crypto/rand.Reader", m.Alg(), r.rand)
		}
		if r.n != m.Hash().Size() || r.opts.HashFunc() != m.Hash() {
			t.Errorf("%s: digest of %d bytes, opts hash %v; want %d, %v", m.Alg(), r.n, r.opts.HashFunc(), m.Hash().Size(), m.Hash())
		}
		pss, isPSS := r.opts.(*rsa.PSSOptions)
		if isPSS != (m == PS256) || isPSS && pss.SaltLength != rsa.PSSSaltLengthEqualsHash {
			t.Errorf("%s: opts = %#v", m.Alg(), r.opts)
		}
	}

	failure := errors.New("token removed")
	if _, err := RS256.Sign("a.b", &recordingSigner{pub: rsaPub, err: failure}); !errors.Is(err, failure) {
		t.Errorf("Sign = %v, want the signer's error", err)
	}
	p256 := testECKey(t, elliptic.P256()).Public()
	if _, err := ES256.Sign("a.b", &recordingSigner{pub: p256, sig: make([]byte, 64)}); err == nil || !strings.Contains(err.Error(), "ASN.1 DER") {
		t.Errorf("Sign with a raw r||s signer = %v, want an error about DER", err)
	}
}

func TestRawECDSA(t *testing.T) {
	der := func(r, s *big.Int) []byte {
		b, err := asn1.Marshal(struct{ R, S *big.Int }{r, s})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	one := big.NewInt(1)
	max256 := new(big.Int).Sub(new(big.Int).Lsh(one, 256), one) // 32 bytes of 0xff: DER adds a 0x00
	tests := []struct {
		name string
		in   []byte
		size int
		want string // hex; "" for an error
	}{
		{"small", der(one, big.NewInt(2)), 4, "0000000100000002"},
		{"leading zero stripped", der(max256, one), 32, strings.Repeat("ff", 32) + strings.Repeat("00", 31) + "01"},
		{"zero", der(new(big.Int), one), 2, "00000001"},
		{"too long for size", der(max256, one), 31, ""},
		{"negative", der(big.NewInt(-1), one), 4, ""},
		{"trailing data", append(der(one, one), 0), 4, ""},
		{"extra element", []byte{0x30, 0x09, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}, 4, ""},
		{"not a sequence", []byte{0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}, 4, ""},
		{"empty integer", []byte{0x30, 0x05, 0x02, 0x00, 0x02, 0x01, 0x01}, 4, ""},
		{"truncated", der(one, one)[:6], 4, ""},
		{"non-minimal length", []byte{0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}, 4, ""},
		{"empty", nil, 4, ""},
		{"raw r||s", make([]byte, 64), 32, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rawECDSA(tt.in, tt.size)
			if tt.want == "" {
				if err == nil {
					t.Errorf("rawECDSA = %x, want an error", got)
				}
				return
			}
			if err != nil || hex.EncodeToString(got) != tt.want {
				t.Errorf("rawECDSA = %x, %v; want %s", got, err, tt.want)
			}
		})
	}

	// Long form length: a P-384 signature padded past 127 bytes never
	// occurs, but a 0x81 length must parse.
	r := new(big.Int).Lsh(one, 8*62)
	long := der(r, r)
	if long[1] != 0x81 {
		t.Fatalf("test input uses length byte %#x, want 0x81", long[1])
	}
	if got, err := rawECDSA(long, 63); err != nil || len(got) != 126 {
		t.Errorf("rawECDSA(long form) = %d bytes, %v", len(got), err)
	}
}

func FuzzRawECDSA(f *testing.F) {
	f.Add([]byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02})
	f.Add([]byte{0x30, 0x81, 0x80})
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := rawECDSA(in, 32)
		var sig struct{ R, S *big.Int }
		rest, asn1Err := asn1.Unmarshal(in, &sig)
		fits := func(x *big.Int) bool { return x.Sign() >= 0 && x.BitLen() <= 256 }
		canonical := asn1Err == nil && len(rest) == 0 && fits(sig.R) && fits(sig.S)
		if canonical {
			again, err := asn1.Marshal(sig)
			canonical = err == nil && bytes.Equal(again, in)
		}
		if !canonical {
			// Not a DER signature on P-256. rawECDSA may still accept
			// redundant leading zeros, which BER allows.
			if err == nil && len(out) != 64 {
				t.Fatalf("rawECDSA(%x) = %d bytes", in, len(out))
			}
			return
		}
		if err != nil {
			t.Fatalf("rawECDSA(%x) = %v, want r=%v s=%v", in, err, sig.R, sig.S)
		}
		if new(big.Int).SetBytes(out[:32]).Cmp(sig.R) != 0 || new(big.Int).SetBytes(out[32:]).Cmp(sig.S) != 0 {
			t.Fatalf("rawECDSA(%x) = %x, want r=%v s=%v", in, out, sig.R, sig.S)
		}
	})
}

func TestMethod(t *testing.T) {
	for _, m := range []*SigningMethod{RS256, RS384, RS512, PS256, ES256, ES384} {
		got, err := Method(m.Alg())
		if got != m || err != nil {
			t.Errorf("Method(%q) = %v, %v", m.Alg(), got, err)
		}
	}
	for _, alg := range []string{"rs256", "HS256", "none", "ES512", ""} {
		_, err := Method(alg)
		if !errors.Is(err, ErrUnsupportedAlgorithm) || !strings.Contains(err.Error(), "RS256, RS384, RS512, PS256, ES256, ES384") {
			t.Errorf("Method(%q) = %v, want ErrUnsupportedAlgorithm listing the supported ones", alg, err)
		}
	}
}

func TestDefaultAlgorithm(t *testing.T) {
	tests := []struct {
		pub     crypto.PublicKey
		want    string
		wantErr error
	}{
		{rsaPublic(2048), "RS256", nil},
		{rsaPublic(1024), "RS256", nil}, // size is CheckKey's business
		{testECKey(t, elliptic.P256()).Public(), "ES256", nil},
		{testECKey(t, elliptic.P384()).Public(), "ES384", nil},
		{testECKey(t, elliptic.P521()).Public(), "", ErrUnsupportedKey},
		{"key", "", ErrUnsupportedKey},
		{nil, "", ErrUnsupportedKey},
	}
	for _, tt := range tests {
		got, err := DefaultAlgorithm(tt.pub)
		if got != tt.want || !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
			t.Errorf("DefaultAlgorithm(%s) = %q, %v; want %q, %v", keyDescription(tt.pub), got, err, tt.want, tt.wantErr)
		}
		if err == nil {
			m, _ := Method(got)
			if err := m.Compatible(tt.pub); err != nil {
				t.Errorf("%s.Compatible(%s) = %v", got, keyDescription(tt.pub), err)
			}
		}
	}
}

func TestSignConcurrently(t *testing.T) {
	keys := methodKeys(t)
	var wg sync.WaitGroup
	for m, key := range keys {
		for range 4 {
			wg.Go(func() {
				sig, err := m.Sign("a.b", key)
				if err == nil {
					err = m.Verify("a.b", sig, key.Public())
				}
				if err != nil {
					t.Errorf("%s: %v", m.Alg(), err)
				}
			})
		}
	}
	wg.Wait()
}

func BenchmarkSign(b *testing.B) {
	// About the size of a grant with an x5c header of three certificates.
	signingString := strings.Repeat("eyJhbGciOiJSUzI1NiIsIng1YyI6WyJNSUlG", 150)
	for _, m := range []*SigningMethod{RS256, RS384, RS512, PS256, ES256, ES384} {
		key := methodKeys(b)[m]
		b.Run(m.Alg(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Sign(signingString, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSignOverhead measures Sign without the signature itself.
func BenchmarkSignOverhead(b *testing.B) {
	signingString := strings.Repeat("eyJhbGciOiJSUzI1NiIsIng1YyI6WyJNSUlG", 150)
	derSig, _ := asn1.Marshal(struct{ R, S *big.Int }{big.NewInt(1), big.NewInt(2)})
	for _, m := range []*SigningMethod{RS256, PS256, ES256} {
		key := &recordingSigner{pub: methodKeys(b)[m].Public(), sig: derSig}
		b.Run(m.Alg(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Sign(signingString, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
