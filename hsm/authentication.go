package hsm

import "crypto/x509"

// Authentication reports whether the certificate is for authentication:
// keyUsage digitalSignature without nonRepudiation, as the authentication
// key of a Buypass or Commfides card has. It is the rule FindKey chooses
// the default key by (see KeyInfo.Authentication), for callers that must
// choose among certificates without a login, when keys are not visible.
func (c Certificate) Authentication() bool {
	if c.Cert == nil {
		return false
	}
	u := c.Cert.KeyUsage
	return u&x509.KeyUsageDigitalSignature != 0 && u&x509.KeyUsageContentCommitment == 0
}
