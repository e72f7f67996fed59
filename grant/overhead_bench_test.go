package grant

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/mp-hsm/mp-hsm/internal/benchutil"
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
	grantT, sigT := benchutil.Interleave(b, grant, sig)
	b.ReportMetric(float64(grantT)/1e3, "grant-us/op")
	b.ReportMetric(float64(sigT)/1e3, "sig-us/op")
	b.ReportMetric(100*(float64(grantT)/float64(sigT)-1), "added-%")
}
