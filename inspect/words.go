package inspect

import (
	"crypto/x509"
	"fmt"
	"time"
)

// Relative says in words how t relates to now for the claim or field
// name: "in 45 s", "3 min ago", "expired 2 days ago" (exp, not_after), with
// a warning for a future iat, nbf or not_before.
func Relative(name string, t, now time.Time) string {
	d := t.Sub(now)
	if d.Abs() < time.Second {
		switch name {
		case "exp", "not_after":
			return "expires now"
		}
		return "now"
	}
	h := Duration(d)
	if d > 0 {
		switch name {
		case "iat":
			return "in " + h + " (issued in the future: clock skew?)"
		case "nbf", "not_before":
			return "in " + h + " (not yet valid)"
		}
		return "in " + h
	}
	switch name {
	case "exp", "not_after":
		return "expired " + h + " ago"
	}
	return h + " ago"
}

// Duration writes |d|, rounded to the second, in the largest whole unit
// that suits it: "45 s", "3 min", "47 h" (up to two days), "300 days".
func Duration(d time.Duration) string {
	s := int64(d.Abs().Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%d s", s)
	case s < 3600:
		return fmt.Sprintf("%d min", s/60)
	case s < 48*3600:
		return fmt.Sprintf("%d h", s/3600)
	}
	return fmt.Sprintf("%d days", s/86400)
}

// KeyUsageNames returns the RFC 5280 names of the bits set in u, in bit
// order; nil when none is set.
func KeyUsageNames(u x509.KeyUsage) []string {
	var out []string
	for _, n := range []struct {
		bit  x509.KeyUsage
		name string
	}{
		{x509.KeyUsageDigitalSignature, "digitalSignature"},
		{x509.KeyUsageContentCommitment, "nonRepudiation"},
		{x509.KeyUsageKeyEncipherment, "keyEncipherment"},
		{x509.KeyUsageDataEncipherment, "dataEncipherment"},
		{x509.KeyUsageKeyAgreement, "keyAgreement"},
		{x509.KeyUsageCertSign, "keyCertSign"},
		{x509.KeyUsageCRLSign, "cRLSign"},
	} {
		if u&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return out
}
