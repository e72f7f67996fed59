package inspect

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/internal/orgid"
)

// Certificate describes one certificate of the x5c header. When it cannot
// be decoded, only Index and Error are set.
type Certificate struct {
	Index       int      `json:"index"`                 // 0 for the leaf
	Subject     string   `json:"subject,omitempty"`     // distinguished name, most specific first
	Issuer      string   `json:"issuer,omitempty"`      // distinguished name of the issuer
	IssuerCN    string   `json:"issuer_cn,omitempty"`   // the issuer's common name, which tells the environment
	Serial      string   `json:"serial,omitempty"`      // hex
	OrgNumber   string   `json:"org_number,omitempty"`  // orgid.FromCertificate
	Environment string   `json:"environment,omitempty"` // test or prod, from the issuing CA
	NotBefore   string   `json:"not_before,omitempty"`  // RFC 3339, UTC
	NotAfter    string   `json:"not_after,omitempty"`   // RFC 3339, UTC
	Validity    string   `json:"validity,omitempty"`    // "valid, expires in 300 days", "expired 2 days ago", ...
	KeyUsage    []string `json:"key_usage,omitempty"`   // KeyUsageNames
	PublicKey   string   `json:"public_key,omitempty"`  // "RSA 2048", "ECDSA P-256", ...
	SHA256      string   `json:"sha256,omitempty"`      // hex fingerprint of the DER
	Error       string   `json:"error,omitempty"`       // why it could not be decoded
}

// describeX5CElement describes the x5c element at index i (standard base64
// DER, leaf first), or says why it is no certificate.
func describeX5CElement(i int, el any, now time.Time) Certificate {
	s, ok := el.(string)
	if !ok {
		return Certificate{Index: i, Error: "not a string"}
	}
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return Certificate{Index: i, Error: "not standard base64 (x5c is not base64url)"}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Certificate{Index: i, Error: "not a DER certificate: " + strings.TrimPrefix(err.Error(), "x509: ")}
	}
	ic := Certificate{
		Index:     i,
		Subject:   dn(cert.Subject),
		Issuer:    dn(cert.Issuer),
		IssuerCN:  cert.Issuer.CommonName,
		NotBefore: cert.NotBefore.UTC().Format(time.RFC3339),
		NotAfter:  cert.NotAfter.UTC().Format(time.RFC3339),
		KeyUsage:  KeyUsageNames(cert.KeyUsage),
		PublicKey: "unknown",
		Serial:    hex.EncodeToString(cert.SerialNumber.Bytes()), // ParseCertificate always sets it
		SHA256:    fmt.Sprintf("%x", sha256.Sum256(cert.Raw)),
	}
	switch k := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		ic.PublicKey = fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		ic.PublicKey = "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		ic.PublicKey = "Ed25519"
	}
	ic.OrgNumber, _ = orgid.FromCertificate(cert)
	if env, err := grant.EnvironmentForCertificate(cert); err == nil {
		ic.Environment = env.Name
	}
	switch {
	case now.Before(cert.NotBefore):
		ic.Validity = "not yet valid: " + Relative("not_before", cert.NotBefore, now)
	case now.After(cert.NotAfter):
		ic.Validity = Relative("not_after", cert.NotAfter, now)
	default:
		ic.Validity = "valid, expires " + Relative("not_after", cert.NotAfter, now)
	}
	return ic
}

// attrNames are the short names of distinguished-name attributes, since
// pkix.Name.String shows organizationIdentifier, which enterprise
// certificates carry, only as hex.
var attrNames = map[string]string{
	"2.5.4.3": "CN", "2.5.4.5": "SERIALNUMBER", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST",
	"2.5.4.9": "STREET", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.17": "postalCode",
	"2.5.4.97": "organizationIdentifier", "1.2.840.113549.1.9.1": "emailAddress",
}

// dn writes a distinguished name as pkix.Name.String does (most specific
// first), with organizationIdentifier by name.
func dn(n pkix.Name) string {
	parts := make([]string, 0, len(n.Names))
	for i := len(n.Names) - 1; i >= 0; i-- {
		a := n.Names[i]
		name := cmp.Or(attrNames[a.Type.String()], a.Type.String())
		parts = append(parts, name+"="+fmt.Sprint(a.Value))
	}
	if len(parts) == 0 {
		return n.String()
	}
	return strings.Join(parts, ", ")
}
