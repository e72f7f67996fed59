// Package benchutil holds what mp-hsm's benchmarks share.
package benchutil

import (
	"testing"
	"time"
)

// Interleave runs a and c once each per benchmark iteration, in alternating
// order, and returns the mean time of each per iteration. Timing two
// operations in turn, rather than in two benchmarks, makes the drift of a
// shared, noisy machine weigh on both alike, so that their ratio holds.
func Interleave(b *testing.B, a, c func()) (aMean, cMean time.Duration) {
	b.Helper()
	var aT, cT time.Duration
	i := 0
	for b.Loop() {
		first, second, t1, t2 := a, c, &aT, &cT
		if i%2 == 1 {
			first, second, t1, t2 = c, a, &cT, &aT
		}
		i++
		t0 := time.Now()
		first()
		tm := time.Now()
		second()
		*t1 += tm.Sub(t0)
		*t2 += time.Since(tm)
	}
	if i == 0 {
		return 0, 0
	}
	return aT / time.Duration(i), cT / time.Duration(i)
}
