package signer

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/mp-hsm/mp-hsm/internal/safefile"
)

// FileSigner is a Signer over a crypto.Signer and its chain: a key read from
// a PKCS#12 or PEM file and held in memory, or any crypto.Signer a program
// holds (NewFileSigner). It is safe for concurrent use when the key is.
type FileSigner struct {
	key   crypto.Signer
	chain []*x509.Certificate
}

var _ Signer = (*FileSigner)(nil)

// NewFileSigner returns a Signer over key (a key in memory, a crypto11 key, a
// KMS adapter). chain, possibly empty, is used as given, leaf first (see
// BuildChain to order one). The key must pass CheckKey and the leaf must
// match it (MatchCertificate).
func NewFileSigner(key crypto.Signer, chain []*x509.Certificate) (*FileSigner, error) {
	if key == nil {
		return nil, fmt.Errorf("%w: nil key", ErrUnsupportedKey)
	}
	pub := key.Public()
	if err := CheckKey(pub); err != nil {
		return nil, err
	}
	if len(chain) > 0 {
		if err := MatchCertificate(pub, chain[0]); err != nil {
			return nil, err
		}
	}
	return &FileSigner{key: key, chain: slices.Clone(chain)}, nil
}

// FromPEM returns a Signer over the PEM private key in keyPEM: PKCS#8,
// PKCS#1 or SEC 1; encrypted keys give ErrEncryptedKey. The chain is built
// (BuildChain) from the optional chainPEM (PEM, or one DER certificate) and
// any certificates in keyPEM, so "openssl pkcs12 -nodes" output works alone;
// certificates of which none matches the key give ErrCertificateMismatch.
func FromPEM(keyPEM []byte, chainPEM []byte) (*FileSigner, error) {
	key, certs, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	if len(chainPEM) > 0 {
		more, err := ReadCertificates(chainPEM)
		if err != nil {
			return nil, err
		}
		certs = append(certs, more...)
	}
	return newFromCertificates(key, certs)
}

// FromFiles reads a PEM private key from keyPath and, unless chainPath is
// empty, certificates from chainPath, and calls FromPEM.
func FromFiles(keyPath, chainPath string) (*FileSigner, error) {
	keyPEM, err := safefile.Read(keyPath, safefile.MaxCertificates)
	if err != nil {
		return nil, fmt.Errorf("signer: reading key: %w", err)
	}
	defer clear(keyPEM)
	var chainPEM []byte
	where := "key " + keyPath
	if chainPath != "" {
		where += ", chain " + chainPath
		if chainPEM, err = safefile.Read(chainPath, safefile.MaxCertificates); err != nil {
			return nil, fmt.Errorf("signer: reading certificate chain: %w", err)
		}
	}
	s, err := FromPEM(keyPEM, chainPEM)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, where)
	}
	return s, nil
}

// FromPKCS12 returns a Signer over the one key in a PKCS#12 (.p12, .pfx)
// file, such as a soft virksomhetssertifikat, with the chain built by
// BuildChain. A wrong password gives ErrPKCS12Password.
func FromPKCS12(data []byte, password string) (*FileSigner, error) {
	priv, cert, caCerts, err := pkcs12.DecodeChain(data, password)
	if err != nil {
		if errors.Is(err, pkcs12.ErrIncorrectPassword) || errors.Is(err, pkcs12.ErrDecryption) {
			return nil, fmt.Errorf("%w (%w)", ErrPKCS12Password, err)
		}
		return nil, fmt.Errorf("signer: reading PKCS#12: %w", err)
	}
	key, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: PKCS#12 holds a %T", ErrUnsupportedKey, priv)
	}
	return newFromCertificates(key, append([]*x509.Certificate{cert}, caCerts...))
}

// FromPKCS12File reads the file at path and calls FromPKCS12.
func FromPKCS12File(path, password string) (*FileSigner, error) {
	data, err := safefile.Read(path, safefile.MaxPKCS12)
	if err != nil {
		return nil, fmt.Errorf("signer: reading PKCS#12: %w", err)
	}
	defer clear(data)
	s, err := FromPKCS12(data, password)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return s, nil
}

// Public returns the public key.
func (s *FileSigner) Public() crypto.PublicKey { return s.key.Public() }

// Sign signs digest with the key; see crypto.Signer.
func (s *FileSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.key.Sign(rand, digest, opts)
}

// Chain returns the certificate chain, leaf first; it is empty when no
// certificate was given. Callers must not modify the returned slice.
func (s *FileSigner) Chain() []*x509.Certificate { return s.chain }

// newFromCertificates builds key's chain from certs, in any order.
func newFromCertificates(key crypto.Signer, certs []*x509.Certificate) (*FileSigner, error) {
	pub := key.Public()
	if err := CheckKey(pub); err != nil {
		return nil, err
	}
	chain, err := BuildChain(pub, certs, nil)
	if err != nil {
		return nil, err
	}
	if chain == nil && len(certs) > 0 {
		// Name the certificate most likely meant as the leaf.
		named := certs[0]
		if i := slices.IndexFunc(certs, func(c *x509.Certificate) bool { return !c.IsCA }); i >= 0 {
			named = certs[i]
		}
		return nil, MatchCertificate(pub, named)
	}
	return &FileSigner{key: key, chain: chain}, nil // CheckKey passed, and BuildChain's leaf holds pub
}

// parseKeyPEM returns the one private key in data and the certificates beside it (ReadCertificates).
func parseKeyPEM(data []byte) (crypto.Signer, []*x509.Certificate, error) {
	var key crypto.Signer
	var seen []string
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		seen = append(seen, block.Type)
		if strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") || block.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, nil, fmt.Errorf("%w: decrypt it first (openssl pkey -in key.pem -out plain.pem) or use the PKCS#12 file", ErrEncryptedKey)
		}
		var parsed any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			parsed, err = x509.ParseECPrivateKey(block.Bytes)
		default: // CERTIFICATE (read below), EC PARAMETERS, PUBLIC KEY, ...
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("signer: reading %s: %w", block.Type, err)
		}
		if key != nil {
			return nil, nil, errors.New("signer: reading key: more than one private key in the PEM input")
		}
		s, ok := parsed.(crypto.Signer)
		if !ok {
			return nil, nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, parsed)
		}
		key = s
	}
	switch {
	case key == nil && len(seen) == 0:
		return nil, nil, errors.New("signer: reading key: no PEM data")
	case key == nil:
		return nil, nil, fmt.Errorf("signer: reading key: no private key in the PEM input (found %s)", strings.Join(seen, ", "))
	case !slices.Contains(seen, "CERTIFICATE"):
		return key, nil, nil
	}
	certs, err := ReadCertificates(data)
	return key, certs, err
}
