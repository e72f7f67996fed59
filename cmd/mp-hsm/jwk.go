package main

import (
	"crypto/x509"
	"encoding/pem"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/signer"
)

func jwkCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "jwk",
		Usage: "print the key's public half as a JWK, for registering it in Samarbeidsportalen",
		Description: "Prints kty, n, e (or crv, x, y), alg, use sig and kid, where kid is the RFC 7638 thumbprint\n" +
			"unless --kid names one. --jwks wraps it in a key set; --pem prints the public key as PEM.",
		Flags: concat(keyFlags(), []cli.Flag{
			&cli.StringFlag{Category: catOut, Name: "kid", Usage: "`KID` to put in the JWK (default: the RFC 7638 thumbprint)", EnvVars: []string{"MP_HSM_KID"}},
			&cli.StringFlag{Category: catOut, Name: "alg", Usage: "`ALG` to put in the JWK (default: RS256 for RSA keys)", EnvVars: []string{"MP_HSM_ALG"}},
			&cli.BoolFlag{Category: catOut, Name: "jwks", Usage: "wrap the JWK in a JWK set {\"keys\":[...]}", EnvVars: []string{"MP_HSM_JWKS"}},
			&cli.BoolFlag{Category: catOut, Name: "pem", Usage: "print the public key as PEM instead", EnvVars: []string{"MP_HSM_PEM"}},
		}),
		Action: func(c *cli.Context) error { return e.jwk(c) },
	}
}

func (e *env) jwk(c *cli.Context) error {
	s, _, err := e.openSigner(c)
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
