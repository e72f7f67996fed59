package signer

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"
)

const maxChainLength = 10 // real chains have two or three elements

// BuildChain returns the certificate chain of the key pub in x5c order (the
// leaf, its issuer, and so on) from pool and extra: each next one has the
// previous one's issuer as subject and verifies its signature, SHA-1 (found
// between older CAs) accepted: Maskinporten validates the chain, this only
// assembles it. Among several candidates (a renewed certificate beside the
// old) it prefers one valid now, then the latest NotAfter. No leaf gives a nil
// chain and nil error: the key can then only be named by kid. A self-signed
// root is left out (RFC 7515 section 4.1.6; Maskinporten trusts its Buypass
// and Commfides roots); a self-signed leaf is kept, alone.
func BuildChain(pub crypto.PublicKey, pool []*x509.Certificate, extra []*x509.Certificate) ([]*x509.Certificate, error) {
	return buildChain(time.Now(), pub, pool, extra)
}

func buildChain(now time.Time, pub crypto.PublicKey, pool, extra []*x509.Certificate) ([]*x509.Certificate, error) {
	eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool }) // every standard library key has Equal
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedKey, keyDescription(pub))
	}
	candidates := slices.DeleteFunc(slices.Concat(pool, extra), func(c *x509.Certificate) bool { return c == nil })

	leaf := best(now, candidates, func(c *x509.Certificate) bool { return eq.Equal(c.PublicKey) })
	if leaf == nil {
		return nil, nil
	}
	chain := []*x509.Certificate{leaf}
	for len(chain) < maxChainLength {
		cert := chain[len(chain)-1]
		issuer := best(now, candidates, func(c *x509.Certificate) bool {
			return !slices.ContainsFunc(chain, c.Equal) && issuedBy(cert, c)
		})
		if issuer == nil || issuedBy(issuer, issuer) { // a self-signed root
			break
		}
		chain = append(chain, issuer)
	}
	return chain, nil
}

// best returns, among the certs that satisfy ok, one valid at now with the
// latest NotAfter, else the one with the latest NotAfter, else nil.
func best(now time.Time, certs []*x509.Certificate, ok func(*x509.Certificate) bool) *x509.Certificate {
	var found *x509.Certificate
	foundValid := false
	for _, c := range certs {
		if !ok(c) {
			continue
		}
		valid := !now.Before(c.NotBefore) && !now.After(c.NotAfter)
		switch {
		case found == nil,
			valid && !foundValid,
			valid == foundValid && c.NotAfter.After(found.NotAfter):
			found, foundValid = c, valid
		}
	}
	return found
}

// issuedBy reports whether parent issued child: parent's subject is child's
// issuer and parent's key verifies child's signature.
func issuedBy(child, parent *x509.Certificate) bool {
	if !bytes.Equal(child.RawIssuer, parent.RawSubject) {
		return false
	}
	err := child.CheckSignatureFrom(parent)
	if _, insecure := err.(x509.InsecureAlgorithmError); insecure {
		// CheckSignatureFrom has checked parent may sign certificates, and
		// refused only SHA-1; CheckSignature accepts it.
		err = parent.CheckSignature(child.SignatureAlgorithm, child.RawTBSCertificate, child.Signature)
	}
	return err == nil
}

// ReadCertificates parses certificates from PEM (every CERTIFICATE block,
// skipping other blocks and text, as "openssl pkcs12 -nodes" writes) or one
// DER certificate. Input with no certificate is an error.
func ReadCertificates(pemOrDER []byte) ([]*x509.Certificate, error) {
	if len(bytes.TrimSpace(pemOrDER)) == 0 {
		return nil, errors.New("signer: reading certificates: empty input")
	}
	if !bytes.Contains(pemOrDER, []byte("-----BEGIN ")) {
		cert, err := x509.ParseCertificate(pemOrDER)
		if err != nil {
			return nil, fmt.Errorf("signer: reading certificates: neither PEM nor a DER certificate: %w", err)
		}
		return []*x509.Certificate{cert}, nil
	}
	var certs []*x509.Certificate
	for block, rest := pem.Decode(pemOrDER); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signer: reading certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("signer: reading certificates: no CERTIFICATE block in PEM input")
	}
	return certs, nil
}
