//go:build cgo

package p11_test

import (
	"crypto"
	"crypto/sha256"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/internal/benchutil"
)

// BenchmarkSignerVsRawInterleaved makes, in each iteration, one signature
// by hand (C_SignInit + C_Sign on a session opened beforehand) and one
// through p11.TokenSigner, on the same key, in alternating order, and
// times each apart: a drift of the machine during the run (frequency,
// neighbours) then weighs on both alike. It reports the mean time of each
// and ratio, the raw time over the signer's (1 means no overhead).
// ns/op is the time of the pair.
func BenchmarkSignerVsRawInterleaved(b *testing.B) {
	tok, s := benchSigner(b)
	ctx := rawCtx(b, tok)
	sh, key := rawSession(b, ctx, tok)
	defer ctx.CloseSession(sh)
	d := sha256.Sum256([]byte("grant"))
	in := append(append([]byte(nil), sha256Prefix...), d[:]...)
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}
	raw := func() {
		if err := ctx.SignInit(sh, mech, key); err != nil {
			b.Fatal(err)
		}
		if _, err := ctx.Sign(sh, in); err != nil {
			b.Fatal(err)
		}
	}
	viaSigner := func() {
		if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
	rawT, signerT := benchutil.Interleave(b, raw, viaSigner)
	b.ReportMetric(float64(rawT)/1e3, "raw-us/op")
	b.ReportMetric(float64(signerT)/1e3, "signer-us/op")
	b.ReportMetric(float64(rawT)/float64(signerT), "ratio")
}
