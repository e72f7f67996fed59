//go:build cgo

package softhsm_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/softhsm"
)

// cas caches one CA per environment: RSA key generation is slow.
var cas sync.Map // softhsm.Env -> func() (*softhsm.CA, error)

func newCA(t *testing.T, env softhsm.Env) *softhsm.CA {
	t.Helper()
	f, _ := cas.LoadOrStore(env, sync.OnceValues(func() (*softhsm.CA, error) { return softhsm.NewCA(env) }))
	ca, err := f.(func() (*softhsm.CA, error))()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestIssueLeaf(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		env      softhsm.Env
		usage    softhsm.Usage
		issuer   string
		keyUsage x509.KeyUsage
		ext      []x509.ExtKeyUsage
	}{
		{softhsm.EnvTest, softhsm.Authentication, "Buypass Class 3 Test4 CA G2 HT Business", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{softhsm.EnvTest, softhsm.Signing, "Buypass Class 3 Test4 CA G2 HT Business", x509.KeyUsageContentCommitment, nil},
		{softhsm.EnvProd, softhsm.Authentication, "Buypass Class 3 CA G2 HT Business", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	} {
		t.Run(string(tt.env)+"/"+strconv.Itoa(int(tt.usage)), func(t *testing.T) {
			ca := newCA(t, tt.env)
			orgnr := softhsm.ValidOrgNumber(7)
			leaf, err := ca.IssueLeaf(key.Public(), softhsm.LeafOptions{OrgNumber: orgnr, OrgName: "EKSEMPEL AS", Usage: tt.usage})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := leaf.Verify(verifyOptions(ca, time.Time{})); err != nil {
				t.Errorf("leaf does not verify against root and intermediate: %v", err)
			}
			if leaf.Issuer.CommonName != tt.issuer {
				t.Errorf("issuer CN = %q, want %q", leaf.Issuer.CommonName, tt.issuer)
			}
			if got := orgID(leaf); got != "NTRNO-"+orgnr {
				t.Errorf("organizationIdentifier = %q, want NTRNO-%s", got, orgnr)
			}
			s := leaf.Subject
			if s.CommonName != "EKSEMPEL AS" || len(s.Organization) != 1 || s.Organization[0] != "EKSEMPEL AS" ||
				len(s.Country) != 1 || s.Country[0] != "NO" || s.SerialNumber != orgnr {
				t.Errorf("subject = %v", s)
			}
			if leaf.KeyUsage != tt.keyUsage {
				t.Errorf("keyUsage = %b, want %b", leaf.KeyUsage, tt.keyUsage)
			}
			if len(leaf.ExtKeyUsage) != len(tt.ext) || len(tt.ext) > 0 && leaf.ExtKeyUsage[0] != tt.ext[0] {
				t.Errorf("extKeyUsage = %v, want %v", leaf.ExtKeyUsage, tt.ext)
			}
			if leaf.IsCA {
				t.Error("leaf is a CA")
			}
			if id, _ := softhsm.KeyID(key.Public()); string(leaf.SubjectKeyId) != string(id) {
				t.Errorf("SubjectKeyId = %x, want KeyID %x", leaf.SubjectKeyId, id)
			}
			if string(leaf.AuthorityKeyId) != string(ca.Intermediate.SubjectKeyId) || len(leaf.AuthorityKeyId) == 0 {
				t.Errorf("AuthorityKeyId = %x, want %x", leaf.AuthorityKeyId, ca.Intermediate.SubjectKeyId)
			}
			if got := orgID(ca.Intermediate); got != "NTRNO-983163327" || ca.Intermediate.Subject.Organization[0] != "Buypass AS" {
				t.Errorf("intermediate subject = %v", ca.Intermediate.Subject)
			}
		})
	}
}

func verifyOptions(ca *softhsm.CA, at time.Time) x509.VerifyOptions {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(ca.Root)
	inter.AddCert(ca.Intermediate)
	return x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
}

// orgID returns the organizationIdentifier (2.5.4.97) of the subject.
func orgID(c *x509.Certificate) string {
	for _, n := range c.Subject.Names {
		if n.Type.String() == "2.5.4.97" {
			s, _ := n.Value.(string)
			return s
		}
	}
	return ""
}

func TestLeafValidity(t *testing.T) {
	ca := newCA(t, softhsm.EnvTest)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, tt := range []struct {
		name                string
		notBefore, notAfter time.Time
		valid               bool
	}{
		{"default", time.Time{}, time.Time{}, true},
		{"expired", now.AddDate(-1, 0, 0), now.Add(-time.Minute), false},
		{"not yet valid", now.Add(time.Hour), time.Time{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leaf, err := ca.IssueLeaf(key.Public(), softhsm.LeafOptions{NotBefore: tt.notBefore, NotAfter: tt.notAfter})
			if err != nil {
				t.Fatal(err)
			}
			_, err = leaf.Verify(verifyOptions(ca, now))
			var invalid x509.CertificateInvalidError
			switch {
			case tt.valid && err != nil:
				t.Errorf("Verify = %v, want nil", err)
			case !tt.valid && (!errors.As(err, &invalid) || invalid.Reason != x509.Expired):
				t.Errorf("Verify = %v, want CertificateInvalidError{Reason: Expired}", err)
			}
		})
	}
	if _, err := ca.IssueLeaf(key.Public(), softhsm.LeafOptions{NotBefore: now, NotAfter: now.Add(-time.Hour)}); err == nil {
		t.Error("IssueLeaf accepted NotAfter before NotBefore")
	}
	if _, err := ca.IssueLeaf(key.Public(), softhsm.LeafOptions{Usage: 7}); err == nil {
		t.Error("IssueLeaf accepted an unknown Usage")
	}
}

func TestNewCAUnknownEnv(t *testing.T) {
	if _, err := softhsm.NewCA("staging"); err == nil {
		t.Error(`NewCA("staging") succeeded`)
	}
}

func TestPEM(t *testing.T) {
	ca := newCA(t, softhsm.EnvTest)
	var certs []*x509.Certificate
	rest := ca.ChainPEM()
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 2 || !certs[0].Equal(ca.Intermediate) || !certs[1].Equal(ca.Root) {
		t.Errorf("ChainPEM holds %d certificates, want the intermediate then the root", len(certs))
	}
	b, _ := pem.Decode(ca.RootPEM())
	if b == nil || string(b.Bytes) != string(ca.Root.Raw) {
		t.Error("RootPEM is not the root")
	}
}

// validOrgNumber checks the modulus-11 check digit, independently of the
// package.
func validOrgNumber(s string) bool {
	if len(s) != 9 {
		return false
	}
	weights := []int{3, 2, 7, 6, 5, 4, 3, 2}
	sum := 0
	for i, w := range weights {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		sum += int(s[i]-'0') * w
	}
	check := (11 - sum%11) % 11
	return check != 10 && int(s[8]-'0') == check
}

func TestValidOrgNumber(t *testing.T) {
	if !validOrgNumber("983163327") || validOrgNumber("983163328") { // Buypass AS
		t.Fatal("the check itself is wrong")
	}
	if softhsm.DefaultOrgNumber != softhsm.ValidOrgNumber(0) || !validOrgNumber(softhsm.DefaultOrgNumber) {
		t.Errorf("DefaultOrgNumber %s is not ValidOrgNumber(0) %s or not valid", softhsm.DefaultOrgNumber, softhsm.ValidOrgNumber(0))
	}
	seen := map[string]bool{}
	for seed := range 500 {
		n := softhsm.ValidOrgNumber(seed)
		if !validOrgNumber(n) || seen[n] {
			t.Fatalf("ValidOrgNumber(%d) = %s: invalid or repeated", seed, n)
		}
		seen[n] = true
	}
}
