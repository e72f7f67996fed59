package grant

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"io"
	"testing"
)

// BenchmarkCachedToken measures Token on a fresh cached token.
func BenchmarkCachedToken(b *testing.B) {
	srv := newEmulator(b, nil)
	ts := testConfig(b, srv, 0).TokenSource(context.Background(), Request{Scopes: []string{"test:read", "test:write"}})
	if _, err := ts.Token(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ts.Token(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCachedTokenParallel measures Token from all cores at once.
func BenchmarkCachedTokenParallel(b *testing.B) {
	srv := newEmulator(b, nil)
	ts := testConfig(b, srv, 0).TokenSource(context.Background(), testReq)
	if _, err := ts.Token(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ts.Token()
		}
	})
}

// BenchmarkGrant builds and signs a complete grant with an in-memory RSA
// 2048 key and an x5c chain of two certificates.
func BenchmarkGrant(b *testing.B) {
	p := thePKI(b)
	cfg := &Config{ClientID: testClient, Signer: p.x5cSigner(b, 0), Environment: Test}
	req := Request{Scopes: []string{"test:read test:write"}, ConsumerOrg: "910000004"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cfg.Grant(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignatureOnly is the bare RSA signature BenchmarkGrant makes,
// with the same key: the floor that grant building adds to.
func BenchmarkSignatureOnly(b *testing.B) {
	s := thePKI(b).x5cSigner(b, 0)
	digest := sha256.Sum256([]byte("header.payload"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}

// constSigner returns a fixed signature at once, to measure what building
// a grant costs apart from the signature.
type constSigner struct{ *testPKI }

func (c constSigner) Public() crypto.PublicKey { return c.keys[0].Public() }
func (c constSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return make([]byte, 256), nil
}
func (c constSigner) Chain() []*x509.Certificate {
	return []*x509.Certificate{c.leaves[0], c.root}
}

// BenchmarkGrantWithoutSignature is BenchmarkGrant with a signer that does
// no work: the cost of building the grant alone.
func BenchmarkGrantWithoutSignature(b *testing.B) {
	cfg := &Config{ClientID: testClient, Signer: constSigner{thePKI(b)}, Environment: Test}
	req := Request{Scopes: []string{"test:read test:write"}, ConsumerOrg: "910000004"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cfg.Grant(req); err != nil {
			b.Fatal(err)
		}
	}
}
