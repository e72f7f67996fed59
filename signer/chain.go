package signer

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// maxChainLength bounds BuildChain; real chains have two or three elements.
const maxChainLength = 10

// BuildChain returns the certificate chain of the key pub, in the order the
// x5c header wants it: the leaf, then its issuer, then that issuer's issuer,
// and so on.
//
// The leaf is a certificate from pool or extra whose public key equals pub.
// When several certificates hold the key (a renewed certificate beside the
// old one), BuildChain prefers one valid now, and among those the one with
// the latest NotAfter. When none holds the key, BuildChain returns a nil
// chain and a nil error: the key can then only be identified by kid.
//
// Each next element is a certificate from pool or extra whose subject equals
// the previous element's issuer and whose key verifies the previous
// element's signature (x509.Certificate.CheckSignatureFrom, except that
// SHA-1 signatures, still found between older CAs, are accepted: the chain is
// only assembled here, and Maskinporten validates it). Among several
// candidates the same preference as for the leaf applies.
//
// The chain ends when no issuer is found or the issuer is self-signed. A
// self-signed root is left out: the verifier must already trust it (RFC 7515
// section 4.1.6 allows omitting it, and Maskinporten validates against its
// own store of Buypass and Commfides roots). A self-signed leaf is kept, as
// the only element.
//
// Validity periods are only used to choose among candidates; expired
// certificates are not rejected.
func BuildChain(pub crypto.PublicKey, pool []*x509.Certificate, extra []*x509.Certificate) ([]*x509.Certificate, error) {
	return buildChain(time.Now(), pub, pool, extra)
}

func buildChain(now time.Time, pub crypto.PublicKey, pool, extra []*x509.Certificate) ([]*x509.Certificate, error) {
	if _, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedKey, keyDescription(pub))
	}
	candidates := make([]*x509.Certificate, 0, len(pool)+len(extra))
	for _, certs := range [][]*x509.Certificate{pool, extra} {
		for _, c := range certs {
			if c != nil {
				candidates = append(candidates, c)
			}
		}
	}

	leaf := best(now, candidates, func(c *x509.Certificate) bool {
		return publicKeyEqual(pub, c.PublicKey)
	})
	if leaf == nil {
		return nil, nil
	}
	chain := []*x509.Certificate{leaf}
	for len(chain) < maxChainLength {
		cert := chain[len(chain)-1]
		issuer := best(now, candidates, func(c *x509.Certificate) bool {
			return !inChain(chain, c) && issuedBy(cert, c)
		})
		if issuer == nil || selfSigned(issuer) {
			break
		}
		chain = append(chain, issuer)
	}
	return chain, nil
}

// best returns the certificate among certs that satisfies ok and is valid at
// now with the latest NotAfter; failing that, the one with the latest
// NotAfter. It returns nil if none satisfies ok.
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

// selfSigned reports whether c names itself as issuer and its own key
// verifies its signature.
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

func inChain(chain []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range chain {
		if x == c || bytes.Equal(x.Raw, c.Raw) {
			return true
		}
	}
	return false
}

// ReadCertificates parses certificates from PEM or DER. PEM input may hold
// several CERTIFICATE blocks, in any order, with other blocks (a private key)
// and text between them, as "openssl pkcs12 -nodes" writes; those are
// skipped. Input that is neither PEM with at least one certificate nor a
// single DER certificate is an error.
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
	rest := pemOrDER
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
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
