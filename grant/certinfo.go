package grant

import (
	"crypto/x509"
	"encoding/asn1"
	"strings"
)

var oidOrganizationIdentifier = asn1.ObjectIdentifier{2, 5, 4, 97}

// CertificateOrgNumber returns the organisation number of an enterprise
// certificate (virksomhetssertifikat): from organizationIdentifier
// "NTRNO-<9 digits>" (OID 2.5.4.97, SEID 2 certificates), or failing that
// from the subject serialNumber (SEID 1). ok is false when neither holds
// nine digits.
func CertificateOrgNumber(cert *x509.Certificate) (orgnr string, ok bool) {
	if cert == nil {
		return "", false
	}
	for _, n := range cert.Subject.Names {
		if !n.Type.Equal(oidOrganizationIdentifier) {
			continue
		}
		if s, isStr := n.Value.(string); isStr {
			if v, found := strings.CutPrefix(s, "NTRNO-"); found && len(v) == 9 && allDigits(v) {
				return v, true
			}
		}
	}
	if s := cert.Subject.SerialNumber; len(s) == 9 && allDigits(s) {
		return s, true
	}
	return "", false
}
