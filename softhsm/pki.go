//go:build cgo

package softhsm

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/orgid"
)

// Env is the Maskinporten environment a CA imitates; the issuing CA's name
// tells which, as with real enterprise certificates.
type Env string

// The environments of Buypass enterprise certificates.
const (
	// EnvTest imitates Buypass test certificates ("Test4" CAs).
	EnvTest Env = "test"
	// EnvProd imitates Buypass production certificates.
	EnvProd Env = "prod"
)

// Usage is the purpose of a leaf certificate, as on an enterprise card that
// carries several key pairs.
type Usage int

const (
	// Authentication certificates have keyUsage digitalSignature and
	// extKeyUsage clientAuth: the key to sign Maskinporten grants with.
	Authentication Usage = iota
	// Signing certificates have keyUsage contentCommitment
	// (nonRepudiation) only: the key a client must not use for grants.
	Signing
)

// DefaultOrgNumber is the organisation number of leaf certificates when
// LeafOptions.OrgNumber is empty. It is ValidOrgNumber(0), and has a valid
// check digit.
const DefaultOrgNumber = "910000004"

// DefaultOrgName is the organisation name of leaf certificates when
// LeafOptions.OrgName is empty.
const DefaultOrgName = "MP-HSM TEST AS"

// buypassOrgID is Buypass AS's organizationIdentifier.
const buypassOrgID = "NTRNO-983163327"

// CA is a test PKI imitating Buypass SEID 2 hard-token enterprise
// certificates: a root and an issuing CA named as Buypass's, with RSA 2048
// keys. It is for tests and the demo only; its keys live in memory.
type CA struct {
	// Root is the self-signed root certificate, the trust anchor.
	Root *x509.Certificate
	// Intermediate is the issuing CA certificate, signed by Root:
	// "Buypass Class 3 Test4 CA G2 HT Business" for EnvTest and
	// "Buypass Class 3 CA G2 HT Business" for EnvProd.
	Intermediate *x509.Certificate
	// RootKey is the private key of Root.
	RootKey crypto.Signer
	// IntermediateKey is the private key of Intermediate; IssueLeaf signs
	// with it.
	IntermediateKey crypto.Signer
	// Env is the environment the CA names tell.
	Env Env
}

// NewCA creates a CA for env with fresh keys. The root is valid from three
// years ago for 25 years and the intermediate from two years ago for 12
// years, both counted from the start of today (UTC).
func NewCA(env Env) (*CA, error) {
	var rootCN, intCN string
	switch env {
	case EnvTest:
		rootCN, intCN = "Buypass Class 3 Test4 Root CA G2 HT", "Buypass Class 3 Test4 CA G2 HT Business"
	case EnvProd:
		rootCN, intCN = "Buypass Class 3 Root CA G2 HT", "Buypass Class 3 CA G2 HT Business"
	default:
		return nil, fmt.Errorf("softhsm: unknown environment %q", env)
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	ca := &CA{Env: env}

	rootKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	rootTmpl, err := caTemplate(rootCN, rootKey.Public(), today.AddDate(-3, 0, 0), 25, -1)
	if err != nil {
		return nil, err
	}
	if ca.Root, err = create(rootTmpl, rootTmpl, rootKey.Public(), rootKey); err != nil {
		return nil, err
	}

	intKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	intTmpl, err := caTemplate(intCN, intKey.Public(), today.AddDate(-2, 0, 0), 12, 0)
	if err != nil {
		return nil, err
	}
	if ca.Intermediate, err = create(intTmpl, ca.Root, intKey.Public(), rootKey); err != nil {
		return nil, err
	}
	ca.RootKey, ca.IntermediateKey = rootKey, intKey
	return ca, nil
}

// caTemplate returns the template of a Buypass CA certificate.
func caTemplate(cn string, pub crypto.PublicKey, notBefore time.Time, years, maxPathLen int) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	ski, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Country:      []string{"NO"},
			Organization: []string{"Buypass AS"},
			CommonName:   cn,
			ExtraNames:   []pkix.AttributeTypeAndValue{{Type: orgid.OID, Value: buypassOrgID}},
		},
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(years, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
		SubjectKeyId:          ski,
	}, nil
}

// LeafOptions describes a leaf certificate. The zero value is an
// authentication certificate for DefaultOrgName, DefaultOrgNumber, valid
// from an hour ago for a year.
type LeafOptions struct {
	// OrgNumber is the organisation number, put in organizationIdentifier
	// as "NTRNO-<OrgNumber>" and in the subject serialNumber. It is not
	// checked, so tests can issue certificates with invalid numbers. If
	// empty, DefaultOrgNumber.
	OrgNumber string
	// OrgName is the subject CN and O. If empty, DefaultOrgName.
	OrgName string
	// Usage is the certificate's purpose; the zero value is
	// Authentication.
	Usage Usage
	// NotBefore is the start of validity. If zero, an hour ago.
	NotBefore time.Time
	// NotAfter is the end of validity. If zero, a year after NotBefore.
	// Set both in the past for an expired certificate, or NotBefore in the
	// future for one that is not yet valid.
	NotAfter time.Time
}

// IssueLeaf issues a SEID 2 enterprise certificate for pub, signed by the
// intermediate. The subject is CN=<OrgName>, O=<OrgName>, C=NO,
// serialNumber=<OrgNumber>, organizationIdentifier=NTRNO-<OrgNumber>;
// SubjectKeyId is KeyID(pub) and AuthorityKeyId the intermediate's key ID.
func (ca *CA) IssueLeaf(pub crypto.PublicKey, o LeafOptions) (*x509.Certificate, error) {
	if o.OrgNumber == "" {
		o.OrgNumber = DefaultOrgNumber
	}
	if o.OrgName == "" {
		o.OrgName = DefaultOrgName
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = o.NotBefore.AddDate(1, 0, 0)
	}
	if !o.NotAfter.After(o.NotBefore) {
		return nil, fmt.Errorf("softhsm: leaf NotAfter %v is not after NotBefore %v", o.NotAfter, o.NotBefore)
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			Country:      []string{"NO"},
			Organization: []string{o.OrgName},
			CommonName:   o.OrgName,
			SerialNumber: o.OrgNumber,
			ExtraNames:   []pkix.AttributeTypeAndValue{{Type: orgid.OID, Value: "NTRNO-" + o.OrgNumber}},
		},
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter,
		BasicConstraintsValid: true,
	}
	switch o.Usage {
	case Authentication:
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case Signing:
		tmpl.KeyUsage = x509.KeyUsageContentCommitment
	default:
		return nil, fmt.Errorf("softhsm: unknown certificate usage %d", o.Usage)
	}
	var err error
	if tmpl.SerialNumber, err = randomSerial(); err != nil {
		return nil, err
	}
	if tmpl.SubjectKeyId, err = KeyID(pub); err != nil {
		return nil, err
	}
	return create(tmpl, ca.Intermediate, pub, ca.IntermediateKey)
}

// RootPEM returns the root certificate in PEM: the trust anchor to give a
// verifier, such as the Maskinporten emulator.
func (ca *CA) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw})
}

// ChainPEM returns the CA certificates in PEM, the intermediate followed by
// the root: what follows a leaf in a certificate chain.
func (ca *CA) ChainPEM() []byte {
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Intermediate.Raw}), ca.RootPEM()...)
}

// ValidOrgNumber returns the seed-th (from 0) organisation number with a
// valid modulus-11 check digit, counting from 910000000; different seeds
// give different numbers. ValidOrgNumber(0) is DefaultOrgNumber. It panics
// if seed is negative or too large for nine digits.
func ValidOrgNumber(seed int) string {
	if seed < 0 {
		panic("softhsm: negative ValidOrgNumber seed")
	}
	for base := 91000000; base <= 99999999; base++ {
		check, ok := orgCheckDigit(base)
		if !ok {
			continue
		}
		if seed == 0 {
			return fmt.Sprintf("%08d%d", base, check)
		}
		seed--
	}
	panic("softhsm: ValidOrgNumber seed too large")
}

// orgCheckDigit returns the modulus-11 check digit of the eight-digit
// organisation number prefix base, weights 3,2,7,6,5,4,3,2; ok is false for
// the prefixes that have none (remainder 1).
func orgCheckDigit(base int) (digit int, ok bool) {
	weights := [8]int{3, 2, 7, 6, 5, 4, 3, 2}
	sum := 0
	for i := 7; i >= 0; i-- {
		sum += base % 10 * weights[i]
		base /= 10
	}
	switch r := sum % 11; r {
	case 0:
		return 0, true
	case 1:
		return 0, false
	default:
		return 11 - r, true
	}
}

// randomSerial returns a random positive certificate serial number of at
// most 128 bits.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("softhsm: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// create signs tmpl with key under parent and parses the result.
func create(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("softhsm: create certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	return cert, nil
}
