package hsm

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// KeyType is the type of a private key.
type KeyType int

// Key types mp-hsm can sign with.
const (
	KeyTypeOther KeyType = iota
	KeyTypeRSA
	KeyTypeEC
)

// String returns "RSA", "EC" or "other".
func (k KeyType) String() string {
	switch k {
	case KeyTypeRSA:
		return "RSA"
	case KeyTypeEC:
		return "EC"
	}
	return "other"
}

// Certificate is an X.509 certificate object on a token.
type Certificate struct {
	ID    []byte // CKA_ID
	Label string // CKA_LABEL
	Cert  *x509.Certificate
}

// KeyInfo describes a private key on a token. It is a description only:
// changing a KeyInfo changes nothing on the token or in a Key.
type KeyInfo struct {
	ID                 []byte // CKA_ID
	Label              string // CKA_LABEL
	Type               KeyType
	Bits               int              // RSA modulus size or EC curve size; 0 when unknown
	CanSign            bool             // CKA_SIGN
	AlwaysAuthenticate bool             // CKA_ALWAYS_AUTHENTICATE: the PIN is needed before each signature
	Public             crypto.PublicKey // nil when the token shows no public half
	// Certificate is the token's certificate for this key (same public
	// key), or nil.
	Certificate *Certificate
}

// clone returns a copy of k that shares no byte slice or Certificate with
// it. The public key and the parsed certificate are shared: crypto and
// x509 values are not changed after they are made.
func (k KeyInfo) clone() KeyInfo {
	k.ID = bytes.Clone(k.ID)
	if k.Certificate != nil {
		c := *k.Certificate
		c.ID = bytes.Clone(c.ID)
		k.Certificate = &c
	}
	return k
}

// IDHex returns CKA_ID in lower-case hex, as --key-id takes it.
func (k KeyInfo) IDHex() string { return hex.EncodeToString(k.ID) }

// Authentication reports whether the key's certificate is for
// authentication: keyUsage digitalSignature without nonRepudiation, as the
// authentication key of a Buypass or Commfides card has.
func (k KeyInfo) Authentication() bool {
	if k.Certificate == nil {
		return false
	}
	u := k.Certificate.Cert.KeyUsage
	return u&x509.KeyUsageDigitalSignature != 0 && u&x509.KeyUsageContentCommitment == 0
}

// String describes the key for a person choosing one: id, label, type and
// size, and the certificate's subject.
func (k KeyInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "id %s label %q %s", k.IDHex(), k.Label, k.Type)
	if k.Bits > 0 {
		fmt.Fprintf(&b, " %d", k.Bits)
	}
	if !k.CanSign {
		b.WriteString(" (cannot sign)")
	}
	if k.AlwaysAuthenticate {
		b.WriteString(" (PIN before each signature)")
	}
	if k.Certificate != nil {
		fmt.Fprintf(&b, " cert %q", k.Certificate.Cert.Subject.CommonName)
		switch {
		case k.Authentication():
			b.WriteString(" [authentication]")
		case k.Certificate.Cert.KeyUsage&x509.KeyUsageContentCommitment != 0:
			b.WriteString(" [signing/nonRepudiation]")
		}
	}
	return b.String()
}
