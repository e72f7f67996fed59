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

// SigningMethod is a JWS algorithm (RFC 7518) that signs with any
// crypto.Signer, such as a key on a smart card. It implements
// jwt.SigningMethod, so it can be passed to jwt.NewWithClaims; the key given
// to Token.SignedString must then be a crypto.Signer.
//
// The package variables RS256, RS384, RS512, PS256, ES256 and ES384 are the
// only values; they are safe for concurrent use and are never registered with
// jwt.RegisterSigningMethod.
type SigningMethod struct {
	alg  string
	hash crypto.Hash
	kind methodKind
	size int               // ECDSA only: bytes in each of r and s
	opts crypto.SignerOpts // passed to crypto.Signer.Sign; shared, never modified
}

type methodKind uint8

const (
	kindPKCS1v15 methodKind = iota
	kindPSS
	kindECDSA
)

// The JWS algorithms this package implements. Maskinporten accepts RS256,
// RS384 and RS512 today; ES256 is announced but not live.
var (
	RS256 = &SigningMethod{alg: "RS256", hash: crypto.SHA256, kind: kindPKCS1v15, opts: crypto.SHA256}
	RS384 = &SigningMethod{alg: "RS384", hash: crypto.SHA384, kind: kindPKCS1v15, opts: crypto.SHA384}
	RS512 = &SigningMethod{alg: "RS512", hash: crypto.SHA512, kind: kindPKCS1v15, opts: crypto.SHA512}
	PS256 = &SigningMethod{alg: "PS256", hash: crypto.SHA256, kind: kindPSS,
		opts: &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}}
	ES256 = &SigningMethod{alg: "ES256", hash: crypto.SHA256, kind: kindECDSA, size: 32, opts: crypto.SHA256}
	ES384 = &SigningMethod{alg: "ES384", hash: crypto.SHA384, kind: kindECDSA, size: 48, opts: crypto.SHA384}
)

var _ jwt.SigningMethod = (*SigningMethod)(nil)

// methods lists the algorithms in the order error messages name them.
var methods = []*SigningMethod{RS256, RS384, RS512, PS256, ES256, ES384}

// Method returns the SigningMethod for a JWS alg name such as "RS256". The
// name is case-sensitive, as in JWS. An unknown name gives an error wrapping
// ErrUnsupportedAlgorithm that lists the supported names.
func Method(alg string) (*SigningMethod, error) {
	for _, m := range methods {
		if m.alg == alg {
			return m, nil
		}
	}
	names := make([]string, len(methods))
	for i, m := range methods {
		names[i] = m.alg
	}
	return nil, fmt.Errorf("%w %q; supported: %s", ErrUnsupportedAlgorithm, alg, strings.Join(names, ", "))
}

// DefaultAlgorithm returns the alg to use for a key when none is configured:
// RS256 for RSA keys, ES256 for ECDSA P-256 and ES384 for ECDSA P-384. Other
// keys give an error wrapping ErrUnsupportedKey.
func DefaultAlgorithm(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return "", fmt.Errorf("%w: empty RSA public key", ErrUnsupportedKey)
		}
		return RS256.alg, nil
	case *ecdsa.PublicKey:
		size, err := ecdsaSize(k)
		if err != nil {
			return "", err
		}
		if size == ES256.size {
			return ES256.alg, nil
		}
		return ES384.alg, nil
	default:
		return "", fmt.Errorf("%w: %s; use RSA or ECDSA P-256/P-384", ErrUnsupportedKey, keyDescription(pub))
	}
}

// Alg returns the JWS alg name, such as "RS256".
func (m *SigningMethod) Alg() string { return m.alg }

// Hash returns the hash function the algorithm signs a digest of.
func (m *SigningMethod) Hash() crypto.Hash { return m.hash }

// Compatible returns nil when pub can sign with m: an RSA key for RS* and
// PS*, an ECDSA P-256 key for ES256, a P-384 key for ES384. Otherwise the
// error wraps both ErrUnsupportedKey and jwt.ErrInvalidKeyType. It does not
// check the RSA key size; see CheckKey.
func (m *SigningMethod) Compatible(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if m.kind != kindECDSA && k != nil && k.N != nil {
			return nil
		}
	case *ecdsa.PublicKey:
		if m.kind == kindECDSA {
			if size, err := ecdsaSize(k); err == nil && size == m.size {
				return nil
			}
		}
	}
	want := "an RSA key"
	if m.kind == kindECDSA {
		want = fmt.Sprintf("an ECDSA P-%d key", m.size*8)
	}
	hint := ""
	if alg, err := DefaultAlgorithm(pub); err == nil {
		hint = "; use " + alg
	}
	return fmt.Errorf("%w: %s needs %s, got: %s%s (%w)", ErrUnsupportedKey, m.alg, want, keyDescription(pub), hint, jwt.ErrInvalidKeyType)
}

// Sign signs signingString with key, which must be a crypto.Signer whose
// public key is Compatible with m. It hashes signingString with m.Hash and
// calls key.Sign with crypto/rand as the random source and, as opts, the
// crypto.Hash or, for PS256, an *rsa.PSSOptions with the salt length equal to
// the hash length. ECDSA signatures are converted from ASN.1 DER to the
// fixed-size r||s form JWS requires.
//
// Sign implements jwt.SigningMethod, so Token.SignedString(key) works.
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
	if err != nil {
		return nil, fmt.Errorf("signer: %s: %w", m.alg, err)
	}
	if m.kind != kindECDSA {
		return sig, nil
	}
	raw, err := rawECDSA(sig, m.size)
	if err != nil {
		return nil, fmt.Errorf("signer: %s: %w", m.alg, err)
	}
	return raw, nil
}

// Verify checks sig, the JWS form of a signature, over signingString. key is
// an *rsa.PublicKey, an *ecdsa.PublicKey, or a crypto.Signer whose Public key
// is used. A signature that does not verify gives an error wrapping
// jwt.ErrSignatureInvalid.
//
// Verify implements jwt.SigningMethod.
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
	switch m.kind {
	case kindPKCS1v15:
		valid = rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), m.hash, digest, sig) == nil
	case kindPSS:
		valid = rsa.VerifyPSS(pub.(*rsa.PublicKey), m.hash, digest, sig, m.opts.(*rsa.PSSOptions)) == nil
	case kindECDSA:
		if len(sig) == 2*m.size {
			r := new(big.Int).SetBytes(sig[:m.size])
			s := new(big.Int).SetBytes(sig[m.size:])
			valid = ecdsa.Verify(pub.(*ecdsa.PublicKey), digest, r, s)
		}
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

// rawECDSA converts an ASN.1 DER ECDSA signature, SEQUENCE { r INTEGER,
// s INTEGER }, to r||s with each of r and s left-padded to size bytes, the form
// RFC 7518 section 3.4 requires. It reads the DER with cryptobyte, as
// hsm writes it, and so accepts only minimal (DER, not BER) encodings.
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
