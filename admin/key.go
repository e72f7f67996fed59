package admin

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/mp-hsm/mp-hsm/signer"
)

// Refusals, checked before anything is written; errors.Is finds them.
var (
	// ErrInvalidKey: a key Digdir would refuse: a private key, no kid, or
	// a use other than sig.
	ErrInvalidKey = errors.New("key not accepted")
	// ErrKidTaken: the client already has a key with the kid.
	ErrKidTaken = errors.New("kid already registered")
	// ErrTooManyKeys: the client would have more than MaxKeys keys.
	ErrTooManyKeys = errors.New("too many keys")
	// ErrKidNotFound: the client has no key with the kid.
	ErrKidNotFound = errors.New("no key with that kid")
)

// privateMembers are the JWK members of private or symmetric keys (RFC 7518
// section 6).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// Key is one registered (or to be registered) key: its JSON as it is,
// sent back unchanged, and what a person choosing keys needs.
type Key struct {
	Raw     json.RawMessage
	Kid     string
	Kty     string
	Alg     string
	Use     string
	Bits    int      // RSA modulus size or EC curve size; 0 when unreadable
	Private []string // the private members present, if any
}

// ParseKey reads one JWK. It fails only when raw is not a JSON object;
// what Digdir would refuse is for CheckKey.
func ParseKey(raw []byte) (Key, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return Key{}, fmt.Errorf("not a JWK: %w", err)
	}
	var j signer.JWK
	if err := json.Unmarshal(raw, &j); err != nil {
		return Key{}, fmt.Errorf("not a JWK: %w", err)
	}
	k := Key{Raw: append(json.RawMessage(nil), raw...), Kid: j.Kid, Kty: j.Kty, Alg: j.Alg, Use: j.Use}
	for _, p := range privateMembers {
		if _, ok := m[p]; ok {
			k.Private = append(k.Private, p)
		}
	}
	if pub, err := j.PublicKey(); err == nil {
		switch p := pub.(type) {
		case *rsa.PublicKey:
			k.Bits = p.N.BitLen()
		case *ecdsa.PublicKey:
			k.Bits = p.Curve.Params().BitSize
		}
	}
	return k, nil
}

// ParseKeys reads a JWK or a JWK set {"keys": [...]}, as mp-hsm jwk prints
// them.
func ParseKeys(data []byte) ([]Key, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWK or JWK set: %w", err)
	}
	if set.Keys == nil {
		k, err := ParseKey(data)
		if err != nil {
			return nil, err
		}
		return []Key{k}, nil
	}
	out := make([]Key, 0, len(set.Keys))
	for i, r := range set.Keys {
		k, err := ParseKey(r)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		out = append(out, k)
	}
	return out, nil
}

// CheckKey returns an ErrInvalidKey error when Digdir would refuse k: it
// has private members, no kid, or a use other than sig.
func CheckKey(k Key) error {
	name := k.Kid
	if name == "" {
		name = "without kid"
	}
	switch {
	case len(k.Private) > 0:
		return fmt.Errorf("admin: key %s has private members (%s): register the public key only (mp-hsm jwk prints it): %w", name, strings.Join(k.Private, ", "), ErrInvalidKey)
	case k.Kid == "":
		return fmt.Errorf("admin: a key has no kid: give it one (mp-hsm jwk sets the thumbprint): %w", ErrInvalidKey)
	case k.Use != "sig":
		return fmt.Errorf("admin: key %s has use %q: Digdir takes only use \"sig\": %w", name, k.Use, ErrInvalidKey)
	}
	return nil
}
