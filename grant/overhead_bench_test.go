package grant

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"testing"
	"time"
)

// BenchmarkGrantVsSignatureInterleaved makes, in each iteration, one
// complete grant (BenchmarkGrant) and one bare signature with the same key
// (BenchmarkSignatureOnly), in alternating order, and times each apart, so
// that a drift of the machine during the run weighs on both alike. It
// reports the mean time of each and added-%, what the grant adds to the
// signature. ns/op is the time of the pair.
func BenchmarkGrantVsSignatureInterleaved(b *testing.B) {
	s := thePKI(b).x5cSigner(b, 0)
	cfg := &Config{ClientID: testClient, Signer: s, Environment: Test}
	req := Request{Scopes: []string{"test:read test:write"}, ConsumerOrg: "910000004"}
	digest := sha256.Sum256([]byte("header.payload"))
	grant := func() {
		if _, err := cfg.Grant(req); err != nil {
			b.Fatal(err)
		}
	}
	sig := func() {
		if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
	var grantT, sigT time.Duration
	i := 0
	for b.Loop() {
		first, second, t1, t2 := grant, sig, &grantT, &sigT
		if i%2 == 1 {
			first, second, t1, t2 = sig, grant, &sigT, &grantT
		}
		i++
		t0 := time.Now()
		first()
		tm := time.Now()
		second()
		*t1 += tm.Sub(t0)
		*t2 += time.Since(tm)
	}
	n := float64(i)
	b.ReportMetric(float64(grantT)/1e3/n, "grant-us/op")
	b.ReportMetric(float64(sigT)/1e3/n, "sig-us/op")
	b.ReportMetric(100*(float64(grantT)/float64(sigT)-1), "added-%")
}
