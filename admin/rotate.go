package admin

import (
	"cmp"
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/mp-hsm/mp-hsm/signer"
)

// NewKey is the token side of a rotation, so that admin knows nothing of
// PKCS#11: Check refuses a key that cannot be made (before any change),
// Generate makes it, and Undo is the command that removes it again.
type NewKey interface {
	Check() error
	Generate() (crypto.PublicKey, error)
	Undo() string
}

// Rotation is what Rotate does.
type Rotation struct {
	ClientID string
	Key      NewKey
	// Prove gets a token for ClientID with the new key's kid; the old key is removed only once it succeeds.
	Prove  func(ctx context.Context, kid string) error
	Remove string // the kid to remove once the new key works; empty for none
}

// Rotated is what a rotation did, read back from the API.
type Rotated struct {
	Kid     string  // the new key's kid (its RFC 7638 thumbprint)
	Removed string  // the kid removed, if any
	Set     *KeySet // the client's keys after it, as the API has them
}

// Rotate makes a new key, registers it beside ClientID's keys, proves it
// with a token, then removes r.Remove, holding the change lock throughout.
// All that can be checked (the set, a write token, room for a key, r.Remove
// registered, r.Key.Check) is checked before a key is made. A failure after
// that is a *ChangeError with the set read back and the command that undoes
// or completes the rotation.
func (c *Client) Rotate(ctx context.Context, r Rotation) (*Rotated, error) {
	l, err := c.Lock(ctx, r.ClientID)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	set, err := c.List(ctx, r.ClientID)
	if err != nil {
		return nil, err
	}
	if _, err := without(r.ClientID, set, r.Remove); r.Remove != "" && err != nil {
		return nil, err
	}
	if len(set.Keys) >= MaxKeys {
		return nil, fmt.Errorf("admin: client %s has %d keys (%s), the most it may have, and the new key is registered before the old is removed: remove one first (mp-hsm admin keys remove --client-id %s --kid KID): %w",
			r.ClientID, len(set.Keys), set.kidList(), r.ClientID, ErrTooManyKeys)
	}
	// A token that may change the set, so that missing rights show before a key is made.
	if _, err := c.token(http.MethodPost, "to change keys (scope "+ScopeWrite+") "); err != nil {
		return nil, err
	}
	if err := r.Key.Check(); err != nil {
		return nil, err
	}

	pub, err := r.Key.Generate()
	if err != nil {
		return nil, fmt.Errorf("%w\nnothing was changed", err)
	}
	var key Key
	j, err := signer.PublicJWK(pub, "", "") // use sig, its RFC 7638 thumbprint as kid
	if err == nil {
		b, _ := json.Marshal(j) // strings only: cannot fail
		key, _ = ParseKey(b)    // b is an object
		err = cmp.Or(CheckKey(key), checkAdd(r.ClientID, set, []Key{key}))
	}
	if err != nil {
		return nil, fmt.Errorf("%w\nthe new key is on the token, unregistered (%s removes it)", err, r.Key.Undo())
	}
	kid := key.Kid
	set, err = c.write(ctx, r.ClientID, set, append(set.Keys, key), "add")
	if err != nil {
		return nil, withNext(err, fmt.Sprintf("the new key %s is on the token but not registered; register it with mp-hsm jwk --kid %s | mp-hsm admin keys add --client-id %s -, or remove it with %s",
			kid, kid, r.ClientID, r.Key.Undo()))
	}
	out := &Rotated{Kid: kid, Set: set}
	if err := r.Prove(ctx, kid); err != nil {
		state, rerr := c.readBack(ctx, r.ClientID)
		return nil, &ChangeError{ClientID: r.ClientID, State: state, ReadErr: rerr,
			Err:  fmt.Errorf("the new key %s is registered on client %s, but a token with it failed; nothing was removed: %w", kid, r.ClientID, err),
			Next: fmt.Sprintf("mp-hsm admin keys remove --client-id %s --kid %s takes the new one away", r.ClientID, kid)}
	}
	if r.Remove != "" {
		keep, err := without(r.ClientID, set, r.Remove)
		if err == nil {
			set, err = c.write(ctx, r.ClientID, set, keep, "remove")
		}
		if err != nil {
			return nil, withNext(err, fmt.Sprintf("the new key %s is registered and works; the old key %s is still registered: mp-hsm admin keys remove --client-id %s --kid %s completes the rotation",
				kid, r.Remove, r.ClientID, r.Remove))
		}
		out.Removed, out.Set = r.Remove, set
	}
	return out, nil
}

// withNext sets next, the command that completes the change, on a *ChangeError, or adds it to another error.
func withNext(err error, next string) error {
	if ce, ok := err.(*ChangeError); ok {
		ce.Next = next
		return ce
	}
	return fmt.Errorf("%w\n%s", err, next)
}
