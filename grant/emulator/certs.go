package emulator

import (
	"crypto/x509"
	"errors"
	"time"
)

// verifyChain checks the x5c chain (leaf first) against roots at now: MP-121
// for an expired certificate, MP-120 for any other fault.
func verifyChain(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) *rejection {
	leaf := chain[0]
	for _, c := range chain {
		if now.After(c.NotAfter) {
			return mp("MP-121", "The certificate "+describe(c)+" expired at "+c.NotAfter.UTC().Format(time.RFC3339)+".")
		}
		if now.Before(c.NotBefore) {
			return mp("MP-120", "The certificate "+describe(c)+" is not valid before "+c.NotBefore.UTC().Format(time.RFC3339)+".")
		}
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err == nil {
		return nil
	}
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.Expired && now.After(inv.Cert.NotAfter) {
		return mp("MP-121", "The certificate "+describe(inv.Cert)+" has expired.")
	}
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		return mp("MP-120", "The certificate chain does not lead to a trusted root; is it a production certificate in test, or the other way round?")
	}
	return mp("MP-120", "The certificate chain does not verify: "+err.Error()+".")
}

func describe(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return "\"" + c.Subject.CommonName + "\""
	}
	return "with serial " + c.SerialNumber.String()
}

func isDigits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
