package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// SigningMethod is a JWS algorithm (RFC 7518), a jwt.SigningMethod whose
// Token.SignedString takes any crypto.Signer, such as a key on a smart card.
// The package variables RS256 ... ES384 are the only values; safe for concurrent use.
type SigningMethod struct {
	alg  string
	hash crypto.Hash
	size int               // ECDSA: bytes in each of r and s; 0 for RSA
	opts crypto.SignerOpts // passed to crypto.Signer.Sign; shared, never modified
}

// The JWS algorithms this package implements. Maskinporten accepts RS256,
// RS384 and RS512 today; ES256 is announced but not live.
var (
	RS256 = &SigningMethod{alg: "RS256", hash: crypto.SHA256, opts: crypto.SHA256}
	RS384 = &SigningMethod{alg: "RS384", hash: crypto.SHA384, opts: crypto.SHA384}
	RS512 = &SigningMethod{alg: "RS512", hash: crypto.SHA512, opts: crypto.SHA512}
	PS256 = &SigningMethod{alg: "PS256", hash: crypto.SHA256,
		opts: &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}}
	ES256 = &SigningMethod{alg: "ES256", hash: crypto.SHA256, size: 32, opts: crypto.SHA256}
	ES384 = &SigningMethod{alg: "ES384", hash: crypto.SHA384, size: 48, opts: crypto.SHA384}

	methods                   = []*SigningMethod{RS256, RS384, RS512, PS256, ES256, ES384}
	_       jwt.SigningMethod = (*SigningMethod)(nil)
)

// Method returns the SigningMethod for a JWS alg name such as "RS256"
// (case-sensitive); an unknown name gives ErrUnsupportedAlgorithm with the
// supported names.
func Method(alg string) (*SigningMethod, error) {
	var names []string
	for _, m := range methods {
		if m.alg == alg {
			return m, nil
		}
		names = append(names, m.alg)
	}
	return nil, fmt.Errorf("%w %q; supported: %s", ErrUnsupportedAlgorithm, alg, strings.Join(names, ", "))
}

// DefaultAlgorithm returns the alg for a key when none is configured: RS256
// for RSA, ES256 for P-256, ES384 for P-384; other keys give ErrUnsupportedKey.
func DefaultAlgorithm(pub crypto.PublicKey) (string, error) {
	m, err := defaultMethod(pub)
	if err != nil {
		return "", err
	}
	return m.alg, nil
}

// Alg returns the JWS alg name, such as "RS256".
func (m *SigningMethod) Alg() string { return m.alg }

// Hash returns the hash function the algorithm signs a digest of.
func (m *SigningMethod) Hash() crypto.Hash { return m.hash }

// Compatible returns nil when pub can sign with m (RSA for RS* and PS*,
// P-256 for ES256, P-384 for ES384), else an error wrapping ErrUnsupportedKey
// and jwt.ErrInvalidKeyType. The RSA key size is CheckKey's job.
func (m *SigningMethod) Compatible(pub crypto.PublicKey) error {
	d, err := defaultMethod(pub)
	if err == nil && (d == m || d.size == 0 && m.size == 0) {
		return nil
	}
	want := "an RSA key"
	if m.size > 0 {
		want = fmt.Sprintf("an ECDSA P-%d key", m.size*8)
	}
	hint := ""
	if err == nil {
		hint = "; use " + d.alg
	}
	return fmt.Errorf("%w: %s needs %s, got: %s%s (%w)", ErrUnsupportedKey, m.alg, want, keyDescription(pub), hint, jwt.ErrInvalidKeyType)
}

// Sign implements jwt.SigningMethod with key, a crypto.Signer Compatible
// with m (PS256 passes *rsa.PSSOptions, salt length = hash length); ECDSA
// signatures are converted from ASN.1 DER to the r||s form JWS requires.
func (m *SigningMethod) Sign(signingString string, key any) ([]byte, error) {
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signer: %s: key is a %T, not a crypto.Signer: %w", m.alg, key, jwt.ErrInvalidKeyType)
	}
	if err := m.Compatible(s.Public()); err != nil {
		return nil, err
	}
	var buf [sha512.Size]byte
	sig, err := s.Sign(rand.Reader, m.digest(&buf, signingString), m.opts)
	if err == nil && m.size > 0 {
		sig, err = rawECDSA(sig, m.size)
	}
	if err != nil {
		return nil, fmt.Errorf("signer: %s: %w", m.alg, err)
	}
	return sig, nil
}

// Verify implements jwt.SigningMethod: it checks sig, in JWS form, over
// signingString with key (a public key, or a crypto.Signer's Public). A bad
// signature gives jwt.ErrSignatureInvalid.
func (m *SigningMethod) Verify(signingString string, sig []byte, key any) error {
	pub := key
	if s, ok := key.(crypto.Signer); ok {
		pub = s.Public()
	}
	if err := m.Compatible(pub); err != nil {
		return err
	}
	var buf [sha512.Size]byte
	digest := m.digest(&buf, signingString)
	var valid bool
	pss, isPSS := m.opts.(*rsa.PSSOptions)
	switch {
	case m.size > 0:
		valid = len(sig) == 2*m.size && ecdsa.Verify(pub.(*ecdsa.PublicKey), digest,
			new(big.Int).SetBytes(sig[:m.size]), new(big.Int).SetBytes(sig[m.size:]))
	case isPSS:
		valid = rsa.VerifyPSS(pub.(*rsa.PublicKey), m.hash, digest, sig, pss) == nil
	default:
		valid = rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), m.hash, digest, sig) == nil
	}
	if !valid {
		return fmt.Errorf("signer: %s: %w", m.alg, jwt.ErrSignatureInvalid)
	}
	return nil
}

// digest hashes s with m.hash into buf and returns the used part of buf.
func (m *SigningMethod) digest(buf *[sha512.Size]byte, s string) []byte {
	// A grant with an x5c header is several kilobytes; []byte(s) would copy
	// it to the heap on every signature. The Sum functions only read their
	// argument and do not keep it, so they can read the string's bytes.
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	switch m.hash {
	case crypto.SHA256:
		d := sha256.Sum256(b)
		return buf[:copy(buf[:], d[:])]
	case crypto.SHA384:
		d := sha512.Sum384(b)
		return buf[:copy(buf[:], d[:])]
	default: // crypto.SHA512
		d := sha512.Sum512(b)
		return buf[:copy(buf[:], d[:])]
	}
}

var errECDSASignature = errors.New("signer returned a malformed ECDSA signature; want ASN.1 DER")

// rawECDSA converts an ASN.1 DER ECDSA signature to r||s, each left-padded
// to size bytes (RFC 7518 section 3.4); cryptobyte accepts DER only, not BER.
func rawECDSA(der []byte, size int) ([]byte, error) {
	var r, s big.Int
	in, seq := cryptobyte.String(der), cryptobyte.String(nil)
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() ||
		!seq.ReadASN1Integer(&r) || !seq.ReadASN1Integer(&s) || !seq.Empty() {
		return nil, errECDSASignature
	}
	if r.Sign() < 0 || s.Sign() < 0 || r.BitLen() > 8*size || s.BitLen() > 8*size {
		return nil, errECDSASignature
	}
	out := make([]byte, 2*size)
	r.FillBytes(out[:size])
	s.FillBytes(out[size:])
	return out, nil
}
