package daemon

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

// An environment inferred from the key's certificate (no Issuer given) is
// the certificate's preset, with Config's AltinnExchange when one is given.
func TestInferredEnvironmentKeepsAltinnExchange(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	name := pkix.Name{CommonName: "Buypass Class 3 Test4 CA G2 HT Business"} // self-signed: the issuer too
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: name, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := signer.NewFileSigner(key, []*x509.Certificate{leaf})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ given, want string }{
		{"https://altinn.example/exchange", "https://altinn.example/exchange"},
		{"", grant.Test.AltinnExchange},
	} {
		s := newOfflineServerWith(t, func(c *Config) {
			c.OpenSigner = func(context.Context) (signer.Signer, error) { return unsignedSigner{fs}, nil }
			c.Grant.Environment = grant.Environment{AltinnExchange: tc.given}
		})
		c := s.stat.Load().conn
		if c == nil {
			t.Fatalf("AltinnExchange %q: the server is not ready: %s", tc.given, s.stat.Load().reason)
		}
		if env := c.grant.Environment; env.Issuer != grant.Test.Issuer || env.AltinnExchange != tc.want {
			t.Errorf("AltinnExchange %q: environment %s, Altinn exchange %q; want %s and %q", tc.given, env.Issuer, env.AltinnExchange, grant.Test.Issuer, tc.want)
		}
	}
}
