package signer_test

import (
	"crypto/rsa"
	"encoding/base64"
	"math/big"
	"testing"

	"github.com/mp-hsm/mp-hsm/signer"
)

// TestThumbprintRFC7638 checks the thumbprint against the example of RFC 7638
// section 3.1.
func TestThumbprintRFC7638(t *testing.T) {
	n, err := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	if err != nil {
		t.Fatal(err)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	got, err := signer.Thumbprint(pub)
	if err != nil {
		t.Fatal(err)
	}
	if want := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Fatalf("Thumbprint = %s, want %s (RFC 7638 section 3.1)", got, want)
	}
	j, err := signer.PublicJWK(pub, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if j.Kid != got || j.Alg != "RS256" || j.Use != "sig" || j.Kty != "RSA" || j.E != "AQAB" {
		t.Fatalf("PublicJWK = %+v", j)
	}
	j, err = signer.PublicJWK(pub, "RS512", "my-kid")
	if err != nil || j.Kid != "my-kid" || j.Alg != "RS512" {
		t.Fatalf("PublicJWK with kid and alg = %+v, %v", j, err)
	}
	if _, err := signer.PublicJWK(pub, "ES256", ""); err == nil {
		t.Fatal("PublicJWK(RSA key, ES256) should fail")
	}
}
