package main

import (
	"cmp"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/internal/orgid"
	"github.com/mp-hsm/mp-hsm/internal/textsafe"
	"github.com/mp-hsm/mp-hsm/signer"
)

// keyCommand: generate and import-cert write to the token; csr only signs,
// so it works with --p12 too.
func keyCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "key",
		Usage: "make a key pair on the token, ask for its certificate, and put the certificate beside it",
		Subcommands: []*cli.Command{
			{
				Name:  "generate",
				Usage: "make a key pair on the token (the private key sensitive and never extractable)",
				Description: "Opens a read-write session, logs in once, refuses a --label or --id that any object on the token\n" +
					"already has, and generates the pair. Prints its id, label, type and JWK thumbprint (the kid\n" +
					"mp-hsm jwk prints).",
				Flags:  slices.Concat(keyFlags(), newKeyFlags(""), []cli.Flag{textOutputFlag()}),
				Action: func(c *cli.Context) error { return e.keyGenerate(c) },
			},
			{
				Name:  "csr",
				Usage: "print a PKCS#10 certificate request (PEM) signed with the chosen key",
				Description: "The subject is O=--org-name, organizationIdentifier=NTRNO-<--org-number>, serialNumber,\n" +
					"CN and C=NO, as Norwegian enterprise certificates have them.",
				Flags: slices.Concat(keyFlags(), []cli.Flag{
					&cli.StringFlag{Name: "org-number", Usage: "the organisation's `ORGNR` (9 digits)"},
					&cli.StringFlag{Name: "org-name", Usage: "the organisation's `NAME` (subject O)"},
					&cli.StringFlag{Name: "common-name", Usage: "subject CN `NAME` (default: --org-name)"},
					&cli.StringFlag{Name: "serial-number", Usage: "subject serialNumber `SN` (default: --org-number)"},
				}),
				Action: func(c *cli.Context) error { return e.keyCSR(c) },
			},
			{
				Name:      "import-cert",
				Usage:     "write an issued certificate (and any issuers in FILE) onto the token beside its key",
				ArgsUsage: "FILE",
				Description: "FILE holds PEM certificates, the one for a key on the token first or anywhere. It is written\n" +
					"with the CKA_ID and label of the key whose public key it holds. The whole file is checked before\n" +
					"anything is written: a certificate that fits no key and is no CA, one already beside its key, an\n" +
					"expired or not yet valid one (unless --force), and one for a key that has a certificate from\n" +
					"another issuer (unless --replace, which removes that one) are refused. A token with several\n" +
					"certificates for one key sends the first the module lists (see docs/lifecycle.md).",
				Flags: slices.Concat(keyFlags(), []cli.Flag{
					&cli.BoolFlag{Name: "force", Usage: "write certificates that are expired or not yet valid"},
					&cli.BoolFlag{Name: "replace", Usage: "remove the key's certificates from other issuers once the new one is written"},
				}),
				Action: func(c *cli.Context) error { return e.keyImportCert(c) },
			},
		},
	}
}

// ubName is X.520's upper bound (RFC 5280 appendix A.1) of each field key
// csr fills: ub-common-name, ub-organization-name, ub-serial-number.
const ubName = 64

// keyCSR signs a certificate request with the chosen key.
func (e *env) keyCSR(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("key csr takes no arguments, got %q", c.Args().First())
	}
	// The subject: each field checked by textsafe.Check; C is NO.
	orgNumber, orgName := c.String("org-number"), c.String("org-name")
	if !grant.ValidOrgNumber(orgNumber) {
		return usagef("--org-number %q: want the organisation's 9-digit number", textsafe.EscapeN(orgNumber, 40))
	}
	if orgName == "" {
		return usagef("--org-name is needed (the organisation's name, subject O)")
	}
	cn, serial := cmp.Or(c.String("common-name"), orgName), cmp.Or(c.String("serial-number"), orgNumber)
	for _, f := range [][2]string{{"--org-name", orgName}, {"--common-name", cn}, {"--serial-number", serial}} {
		if err := textsafe.Check(f[0], f[1], ubName); err != nil {
			return usageErr(err)
		}
	}
	subject := pkix.Name{Country: []string{"NO"}, Organization: []string{orgName}, CommonName: cn, SerialNumber: serial,
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: orgid.OID, Value: "NTRNO-" + orgNumber}}}
	s, err := e.openSigner(c, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, s)
	if err != nil {
		return withCode(exitToken, fmt.Errorf("signing the certificate request: %w", err))
	}
	return pem.Encode(e.stdout, &pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func jwkCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "jwk",
		Usage: "print the key's public half as a JWK, for registering it in Samarbeidsportalen",
		Description: "Prints kty, n, e (or crv, x, y), alg, use sig and kid, where kid is the RFC 7638 thumbprint\n" +
			"unless --kid names one. --jwks wraps it in a key set; --pem prints the public key as PEM.",
		Flags: slices.Concat(keyFlags(), []cli.Flag{
			&cli.StringFlag{Category: catOut, Name: "kid", Usage: "`KID` to put in the JWK (default: the RFC 7638 thumbprint)", EnvVars: []string{"MP_HSM_KID"}},
			&cli.StringFlag{Category: catOut, Name: "alg", Usage: "`ALG` to put in the JWK (default: RS256 for RSA keys)", EnvVars: []string{"MP_HSM_ALG"}},
			&cli.BoolFlag{Category: catOut, Name: "jwks", Usage: "wrap the JWK in a JWK set {\"keys\":[...]}", EnvVars: []string{"MP_HSM_JWKS"}},
			&cli.BoolFlag{Category: catOut, Name: "pem", Usage: "print the public key as PEM instead", EnvVars: []string{"MP_HSM_PEM"}},
		}),
		Action: func(c *cli.Context) error { return e.jwk(c) },
	}
}

func (e *env) jwk(c *cli.Context) error {
	s, err := e.openSigner(c, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	if c.Bool("pem") {
		der, err := x509.MarshalPKIXPublicKey(s.Public())
		if err != nil {
			return err
		}
		return pem.Encode(e.stdout, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	j, err := signer.PublicJWK(s.Public(), c.String("alg"), c.String("kid"))
	if err != nil {
		return usageErr(err)
	}
	if c.Bool("jwks") {
		return writeJSON(e.stdout, map[string]any{"keys": []*signer.JWK{j}})
	}
	return writeJSON(e.stdout, j)
}
