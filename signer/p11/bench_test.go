//go:build cgo

package p11_test

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// The benchmarks compare one RSA 2048 PKCS #1 v1.5 SHA-256 signature through
// p11.TokenSigner with the same signature made by hand with miekg/pkcs11
// (C_SignInit + C_Sign on a session opened beforehand) on the same key of
// the same SoftHSM2 token, in the same run. The Parallel variants run
// GOMAXPROCS goroutines (b.RunParallel); compare with -cpu 1,2.

var bench struct {
	once sync.Once
	tok  *softhsm.Token
	s    *p11.TokenSigner
	err  error
}

var sha256Prefix = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

func benchSigner(b *testing.B) (*softhsm.Token, *p11.TokenSigner) {
	b.Helper()
	tok := softhsm.New(b) // skips the benchmark without SoftHSM2
	bench.once.Do(func() {
		tok.GenerateRSA(b, 2048, softhsm.KeyOptions{ID: []byte{0xbe}, Label: "bench"})
		bench.tok = tok
		bench.s, bench.err = p11.Open(p11.Config{
			Module: tok.Module, Token: hsm.TokenSelector{Label: tok.Label},
			PIN: hsm.StaticPIN([]byte(tok.PIN)),
		})
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return bench.tok, bench.s
}

// rawSession opens a session on the bench token with miekg/pkcs11 directly
// and finds the bench key once.
func rawSession(b *testing.B, ctx *pkcs11.Ctx, tok *softhsm.Token) (pkcs11.SessionHandle, pkcs11.ObjectHandle) {
	b.Helper()
	sh, err := ctx.OpenSession(tok.SlotID, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		b.Fatal(err)
	}
	if err := ctx.Login(sh, pkcs11.CKU_USER, tok.PIN); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		b.Fatal(err)
	}
	if err := ctx.FindObjectsInit(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte{0xbe}),
	}); err != nil {
		b.Fatal(err)
	}
	hs, _, err := ctx.FindObjects(sh, 1)
	ctx.FindObjectsFinal(sh)
	if err != nil || len(hs) != 1 {
		b.Fatalf("finding the bench key: %v (%d found)", err, len(hs))
	}
	return sh, hs[0]
}

func rawCtx(b *testing.B, tok *softhsm.Token) *pkcs11.Ctx {
	ctx := pkcs11.New(tok.Module)
	if err := ctx.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		b.Fatal(err)
	}
	return ctx // shares the process-wide initialisation; never finalised here
}

func BenchmarkRawCSign(b *testing.B) {
	tok, _ := benchSigner(b)
	ctx := rawCtx(b, tok)
	sh, key := rawSession(b, ctx, tok)
	defer ctx.CloseSession(sh)
	d := sha256.Sum256([]byte("grant"))
	in := append(append([]byte(nil), sha256Prefix...), d[:]...)
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}
	b.ResetTimer()
	for b.Loop() {
		if err := ctx.SignInit(sh, mech, key); err != nil {
			b.Fatal(err)
		}
		if _, err := ctx.Sign(sh, in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignerSign(b *testing.B) {
	_, s := benchSigner(b)
	d := sha256.Sum256([]byte("grant"))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawCSignParallel(b *testing.B) {
	tok, _ := benchSigner(b)
	ctx := rawCtx(b, tok)
	d := sha256.Sum256([]byte("grant"))
	in := append(append([]byte(nil), sha256Prefix...), d[:]...)
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		sh, key := rawSession(b, ctx, tok)
		defer ctx.CloseSession(sh)
		for pb.Next() {
			if err := ctx.SignInit(sh, mech, key); err != nil {
				b.Error(err)
				return
			}
			if _, err := ctx.Sign(sh, in); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkSignerSignParallel(b *testing.B) {
	_, s := benchSigner(b)
	d := sha256.Sum256([]byte("grant"))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
