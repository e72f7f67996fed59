package hsm

import (
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// Key is a private key on a token. It implements crypto.Signer: RSA
// PKCS #1 v1.5 (CKM_RSA_PKCS over a DigestInfo), RSA-PSS (CKM_RSA_PKCS_PSS)
// and ECDSA (CKM_ECDSA, the signature returned as ASN.1 DER). Safe for
// concurrent use; signatures run in parallel up to the token's session
// limit. After Close of its Token or Module, it returns tokenerr.ErrClosed.
type Key struct {
	info   KeyInfo // what FindKey found, never changed: Info hands out copies
	t      *Token
	handle objectHandle
}

var _ crypto.Signer = (*Key)(nil)

func (t *Token) newKey(o keyObject) (*Key, error) {
	if !o.info.CanSign {
		return nil, &Error{Op: "find key", Kind: tokenerr.ErrKeyCannotSign, Detail: o.info.String() + " has CKA_SIGN false"}
	}
	if o.info.Public == nil {
		return nil, &Error{Op: "find key", Kind: tokenerr.ErrKeyNotFound,
			Detail: o.info.String() + ": the token shows neither its public key nor a certificate for it"}
	}
	if o.info.Type != KeyTypeRSA && o.info.Type != KeyTypeEC {
		return nil, &Error{Op: "find key", Kind: tokenerr.ErrUnsupported, Detail: o.info.String() + ": only RSA and EC keys can sign"}
	}
	return &Key{info: o.info.clone(), t: t, handle: o.handle}, nil
}

// Info describes the key: a copy the caller may change.
func (k *Key) Info() KeyInfo { return k.info.clone() }

// String describes the key as KeyInfo.String does.
func (k *Key) String() string { return k.info.String() }

// Public returns the key's public half.
func (k *Key) Public() crypto.PublicKey { return k.info.Public }

// Token returns the token the key is on.
func (k *Key) Token() *Token { return k.t }

// Sign signs digest, which must be the hash given by opts. See SignContext.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.SignContext(context.Background(), digest, opts)
}

// SignContext signs digest like Sign, waiting for a free session no longer
// than ctx allows. opts.HashFunc() names the hash; an *rsa.PSSOptions asks
// for RSA-PSS. For a CKA_ALWAYS_AUTHENTICATE key, the PIN source given to
// Login is asked again and presented with a context login (never retried;
// see Token.contextLogin).
func (k *Key) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if err := k.t.enter("sign"); err != nil {
		return nil, err
	}
	defer k.t.leave()
	if opts == nil {
		opts = crypto.Hash(0)
	}
	h := opts.HashFunc()
	if h != 0 && len(digest) != h.Size() {
		return nil, &Error{Op: "sign", Kind: tokenerr.ErrUnsupported,
			Detail: fmt.Sprintf("digest is %d bytes, %v needs %d", len(digest), h, h.Size())}
	}
	mech, input, err := k.mechanism(digest, opts)
	if err != nil {
		return nil, err
	}
	sh, err := k.t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	sig, err := k.signOn(sh, mech, input)
	// A session on which a signature failed is closed, not pooled: its
	// operation state is unknown (tpm2-pkcs11 leaves the operation active
	// after a failed C_Sign and answers the next C_SignInit with
	// CKR_OPERATION_ACTIVE), and PKCS#11 before 3.0 cannot reset it.
	k.t.release(sh, err != nil)
	if err != nil {
		return nil, err
	}
	if k.info.Type == KeyTypeEC {
		return ecdsaDER(sig)
	}
	return sig, nil
}

// signOn runs one signature on session sh.
func (k *Key) signOn(sh sessionHandle, mech []*mechanism, input []byte) ([]byte, error) {
	if err := k.t.p.SignInit(sh, mech, k.handle); err != nil {
		return nil, wrap("C_SignInit", err)
	}
	if k.info.AlwaysAuthenticate {
		if err := k.t.contextLogin(sh); err != nil {
			return nil, err
		}
	}
	sig, err := k.t.p.Sign(sh, input)
	return sig, wrap("C_Sign", err)
}

// rsaHashes are the hashes RSA signs with: the DigestInfo prefix for
// PKCS #1 v1.5 (RFC 8017 section 9.2, note 1), and RSA-PSS's hash and MGF.
var rsaHashes = map[crypto.Hash]struct {
	prefix    []byte
	hash, mgf uint
}{
	crypto.SHA1:   {[]byte{0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14}, pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1},
	crypto.SHA224: {[]byte{0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c}, pkcs11.CKM_SHA224, pkcs11.CKG_MGF1_SHA224},
	crypto.SHA256: {[]byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256},
	crypto.SHA384: {[]byte{0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30}, pkcs11.CKM_SHA384, pkcs11.CKG_MGF1_SHA384},
	crypto.SHA512: {[]byte{0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40}, pkcs11.CKM_SHA512, pkcs11.CKG_MGF1_SHA512},
}

// Mechanisms without parameters are shared: a signature allocates none.
var (
	mechRSAPKCS = []*mechanism{newMechanism(pkcs11.CKM_RSA_PKCS, nil)}
	mechECDSA   = []*mechanism{newMechanism(pkcs11.CKM_ECDSA, nil)}
)

func (k *Key) mechanism(digest []byte, opts crypto.SignerOpts) ([]*mechanism, []byte, error) {
	h := opts.HashFunc()
	rh, known := rsaHashes[h]
	switch k.info.Type {
	case KeyTypeRSA:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			if !known {
				return nil, nil, &Error{Op: "sign", Kind: tokenerr.ErrUnsupported, Detail: fmt.Sprintf("RSA-PSS with %v", h)}
			}
			salt := pss.SaltLength
			switch salt {
			case rsa.PSSSaltLengthAuto, rsa.PSSSaltLengthEqualsHash:
				salt = h.Size()
			}
			if salt < 0 {
				return nil, nil, &Error{Op: "sign", Kind: tokenerr.ErrUnsupported, Detail: fmt.Sprintf("RSA-PSS salt length %d", pss.SaltLength)}
			}
			return []*mechanism{newMechanism(pkcs11.CKM_RSA_PKCS_PSS, newPSSParams(rh.hash, rh.mgf, uint(salt)))}, digest, nil
		}
		if h == 0 {
			return mechRSAPKCS, digest, nil
		}
		if !known {
			return nil, nil, &Error{Op: "sign", Kind: tokenerr.ErrUnsupported, Detail: fmt.Sprintf("RSA PKCS #1 v1.5 with %v", h)}
		}
		return mechRSAPKCS, append(append(make([]byte, 0, len(rh.prefix)+len(digest)), rh.prefix...), digest...), nil
	case KeyTypeEC:
		if _, ok := opts.(*rsa.PSSOptions); ok {
			return nil, nil, &Error{Op: "sign", Kind: tokenerr.ErrUnsupported, Detail: "RSA-PSS options with an EC key"}
		}
		return mechECDSA, digest, nil
	}
	return nil, nil, &Error{Op: "sign", Kind: tokenerr.ErrUnsupported, Detail: "key type " + k.info.Type.String()}
}

// ecdsaDER turns CKM_ECDSA's raw r||s into the DER crypto.Signer returns.
func ecdsaDER(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, &Error{Op: "C_Sign", Kind: tokenerr.ErrDevice, Detail: fmt.Sprintf("ECDSA signature of odd length %d", len(raw))}
	}
	n := len(raw) / 2
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:n]), new(big.Int).SetBytes(raw[n:])})
}
