package signer_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"log"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mp-hsm/mp-hsm/signer"
)

// Sign a JWT with RS256 and a FileSigner, and verify it with golang-jwt's own
// RS256, as Maskinporten would.
func ExampleNewFileSigner() {
	// A key in memory. Programs use a smart card (New), a soft certificate
	// (FromPKCS12File) or a PEM key (FromFiles) instead.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	s, err := signer.NewFileSigner(key, nil)
	if err != nil {
		log.Fatal(err)
	}

	claims := jwt.MapClaims{
		"aud": "https://test.maskinporten.no/",
		"iss": "my-client-id",
		"exp": time.Now().Add(time.Minute).Unix(),
	}
	grant, err := jwt.NewWithClaims(signer.RS256, claims).SignedString(s)
	if err != nil {
		log.Fatal(err)
	}
	header, _ := base64.RawURLEncoding.DecodeString(strings.Split(grant, ".")[0])
	fmt.Println(string(header))

	token, err := jwt.Parse(grant, func(*jwt.Token) (any, error) { return s.Public(), nil },
		jwt.WithValidMethods([]string{"RS256"}))
	if err != nil {
		log.Fatal(err)
	}
	iss, _ := token.Claims.GetIssuer()
	fmt.Println("verified:", token.Valid, iss)
	// Output:
	// {"alg":"RS256","typ":"JWT"}
	// verified: true my-client-id
}

// Open a soft virksomhetssertifikat and sign with the algorithm its key
// calls for.
func ExampleFromPKCS12File() {
	s, err := signer.FromPKCS12File("virksomhet.p12", os.Getenv("P12_PASSWORD"))
	if err != nil {
		log.Fatal(err)
	}
	alg, err := signer.DefaultAlgorithm(s.Public())
	if err != nil {
		log.Fatal(err)
	}
	method, err := signer.Method(alg)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("certificate:", s.Chain()[0].Subject)
	grant := jwt.NewWithClaims(method, jwt.MapClaims{"iss": "my-client-id"})
	// The x5c header: the leaf first, then its issuers.
	var x5c []string
	for _, c := range s.Chain() {
		x5c = append(x5c, base64.StdEncoding.EncodeToString(c.Raw))
	}
	grant.Header["x5c"] = x5c
	signed, err := grant.SignedString(s)
	if err != nil {
		log.Fatal(err)
	}
	_ = signed
}

func ExampleMethod() {
	m, err := signer.Method("RS512")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Alg(), m.Hash())

	_, err = signer.Method("HS256")
	fmt.Println(err)
	// Output:
	// RS512 SHA-512
	// signer: unsupported algorithm "HS256"; supported: RS256, RS384, RS512, PS256, ES256, ES384
}

func ExampleDefaultAlgorithm() {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	alg, _ := signer.DefaultAlgorithm(key.Public())
	fmt.Println(alg)
	fmt.Println(signer.RS256.Compatible(key.Public()))
	// Output:
	// ES256
	// signer: unsupported key: RS256 needs an RSA key, got: ECDSA P-256 key; use ES256 (key is of invalid type)
}

// Wrap a crypto.Signer that the program already holds, such as a key that
// github.com/ThalesGroup/crypto11 found on a token (Context.FindKeyPair),
// with its certificates in any order (Context.FindCertificate): BuildChain
// puts the leaf first and leaves the root out, and NewFileSigner gives the
// Signer that grant.Config takes, with the chain for the x5c header.
func ExampleBuildChain() {
	// Stand-ins for what crypto11 returns: a key and three certificates.
	key, root, intermediate, leaf := examplePKI()

	chain, err := signer.BuildChain(key.Public(), []*x509.Certificate{root, leaf, intermediate}, nil)
	if err != nil {
		log.Fatal(err)
	}
	s, err := signer.NewFileSigner(key, chain)
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range s.Chain() {
		fmt.Println(c.Subject.CommonName)
	}
	// Output:
	// MP-HSM TEST AS
	// Example Issuing CA
}

// examplePKI returns a key and its leaf certificate, issued by an
// intermediate under a self-signed root.
func examplePKI() (key crypto.Signer, root, intermediate, leaf *x509.Certificate) {
	issue := func(cn string, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer, ca bool) *x509.Certificate {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: ca, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		}
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
		if err != nil {
			log.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			log.Fatal(err)
		}
		return cert
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			log.Fatal(err)
		}
		return k
	}
	rootKey, intKey, leafKey := newKey(), newKey(), newKey()
	root = issue("Example Root CA", rootKey.Public(), nil, rootKey, true)
	intermediate = issue("Example Issuing CA", intKey.Public(), root, rootKey, true)
	leaf = issue("MP-HSM TEST AS", leafKey.Public(), intermediate, intKey, false)
	return leafKey, root, intermediate, leaf
}
