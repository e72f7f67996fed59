// Package orgid reads the organisation number of a Norwegian enterprise
// certificate (virksomhetssertifikat). It is shared by grant, its emulator
// and the command line, which cannot import one another.
package orgid

import (
	"crypto/x509"
	"encoding/asn1"
	"strings"
)

// OID is X.520 organizationIdentifier (2.5.4.97), in which SEID 2
// certificates carry "NTRNO-<organisation number>".
var OID = asn1.ObjectIdentifier{2, 5, 4, 97}

// FromCertificate returns the organisation number of cert: from
// organizationIdentifier "NTRNO-<9 digits>" (SEID 2), or failing that from
// the subject serialNumber (SEID 1). ok is false when neither holds nine
// digits.
func FromCertificate(cert *x509.Certificate) (orgnr string, ok bool) {
	if cert == nil {
		return "", false
	}
	for _, n := range cert.Subject.Names {
		if s, isStr := n.Value.(string); isStr && n.Type.Equal(OID) {
			if v, found := strings.CutPrefix(s, "NTRNO-"); found && nineDigits(v) {
				return v, true
			}
		}
	}
	if s := cert.Subject.SerialNumber; nineDigits(s) {
		return s, true
	}
	return "", false
}

func nineDigits(s string) bool {
	if len(s) != 9 {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
