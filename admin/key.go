package admin

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/mp-hsm/mp-hsm/internal/textsafe"
	"github.com/mp-hsm/mp-hsm/signer"
)

// Refusals, checked before anything is written; errors.Is finds them.
var (
	// ErrInvalidKey: a key Digdir would refuse: a private key, no kid, or a use other than sig.
	ErrInvalidKey = errors.New("key not accepted")
	// ErrKidTaken: the client already has a key with the kid.
	ErrKidTaken = errors.New("kid already registered")
	// ErrTooManyKeys: the client would have more than MaxKeys keys.
	ErrTooManyKeys = errors.New("too many keys")
	// ErrKidNotFound: the client has no key with the kid.
	ErrKidNotFound = errors.New("no key with that kid")
)

// privateMembers name the members of private or symmetric JWKs (RFC 7518
// section 6), matched in any letter case at any depth; publicMembers are the
// only members sent to the API, by key type.
var (
	privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "r", "t", "k"}
	publicMembers  = map[string][]string{
		"RSA": {"kty", "kid", "alg", "use", "n", "e", "x5c", "x5t", "x5t#S256"},
		"EC":  {"kty", "kid", "alg", "use", "crv", "x", "y", "x5c", "x5t", "x5t#S256"},
	}
)

// Key is one registered (or to be registered) key; Raw, rebuilt from the allowlist, is what is sent.
type Key struct {
	Raw     json.RawMessage
	Kid     string
	Kty     string
	Alg     string
	Use     string
	Bits    int      // RSA modulus size or EC curve size; 0 when unreadable
	Private []string // the private members present, if any, as spelled
}

// ParseKey reads one JWK; it fails only when raw is not a JSON object
// (CheckKey judges the rest). Raw keeps only the public members of the key's
// type, so nothing private or unknown is ever sent; Private lists private
// members found anywhere.
func ParseKey(raw []byte) (Key, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return Key{}, fmt.Errorf("not a JWK: %w", err)
	}
	var k Key
	var all any
	_ = json.Unmarshal(raw, &all) // cannot fail: raw decoded as an object above
	findPrivate(all, "", &k.Private)
	var kty string
	_ = json.Unmarshal(m["kty"], &kty)
	names, pub := publicMembers[kty], map[string]json.RawMessage{}
	if names == nil {
		names = []string{"kty", "kid", "alg", "use"}
	}
	for _, name := range names {
		if v, ok := m[name]; ok {
			pub[name] = v
		}
	}
	clean, _ := json.Marshal(pub) // values are JSON just decoded
	var j signer.JWK
	if err := json.Unmarshal(clean, &j); err != nil {
		return Key{}, fmt.Errorf("not a JWK: %w", err)
	}
	k.Raw, k.Kid, k.Kty, k.Alg, k.Use = clean, j.Kid, j.Kty, j.Alg, j.Use
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

// findPrivate appends the path of each private member of v to out, escaped.
func findPrivate(v any, path string, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for _, name := range slices.Sorted(maps.Keys(v)) {
			p := name
			if path != "" {
				p = path + "." + name
			}
			if slices.Contains(privateMembers, strings.ToLower(name)) {
				*out = append(*out, textsafe.EscapeN(p, 40))
			}
			findPrivate(v[name], p, out)
		}
	case []any:
		for i, e := range v {
			findPrivate(e, fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
}

// ParseKeys reads a JWK or a JWK set {"keys": [...]}, as mp-hsm jwk prints them.
func ParseKeys(data []byte) ([]Key, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWK or JWK set: %w", err)
	}
	if set.Keys == nil { // one JWK: an object, so ParseKey takes it
		set.Keys = []json.RawMessage{data}
	}
	return parseKeys(set.Keys)
}

func parseKeys(raws []json.RawMessage) ([]Key, error) {
	out := make([]Key, 0, len(raws))
	for i, r := range raws {
		k, err := ParseKey(r)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		out = append(out, k)
	}
	return out, nil
}

// CheckKey returns an ErrInvalidKey error when Digdir would refuse k
// (private members, no kid, use not sig) or its public key is unreadable.
func CheckKey(k Key) error {
	name := cmp.Or(textsafe.Escape(k.Kid), "without kid")
	switch {
	case len(k.Private) > 0:
		return fmt.Errorf("admin: key %s has private members (%s): register the public key only (mp-hsm jwk prints it): %w", name, strings.Join(k.Private, ", "), ErrInvalidKey)
	case k.Kid == "":
		return fmt.Errorf("admin: a key has no kid: give it one (mp-hsm jwk sets the thumbprint): %w", ErrInvalidKey)
	case k.Use != "sig":
		return fmt.Errorf("admin: key %s has use %q: Digdir takes only use \"sig\": %w", name, textsafe.Escape(k.Use), ErrInvalidKey)
	case k.Bits == 0:
		return fmt.Errorf("admin: key %s is not a readable RSA or EC public key (kty %q; members n and e, or crv, x and y, spelled so): %w", name, textsafe.Escape(k.Kty), ErrInvalidKey)
	}
	return nil
}
