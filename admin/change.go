package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/changelock"
	"github.com/mp-hsm/mp-hsm/internal/textsafe"
)

// ErrChanged: the set read back is neither the one written nor the one
// before: someone else changed the keys at the same time.
var ErrChanged = errors.New("the key set changed under us")

const readBackTimeout = 10 * time.Second // also when the write used up the caller's deadline

// ChangeError is a change of a client's key set that failed, or whose
// answer was lost: State is the set read back afterwards (nil, then
// ReadErr says why) and Next the command that undoes or completes it.
type ChangeError struct {
	ClientID string
	Err      error
	State    *KeySet
	ReadErr  error
	Next     string
}

// Error says what failed, the real state and what to do.
func (e *ChangeError) Error() string {
	var b strings.Builder
	b.WriteString(e.Err.Error())
	if e.State != nil {
		fmt.Fprintf(&b, "\nread back from the API: client %s has %d key(s): %s", e.ClientID, len(e.State.Keys), e.State.kidList())
	} else {
		fmt.Fprintf(&b, "\nthe client's keys could not be read back (%v): see them with mp-hsm admin keys list --client-id %s", e.ReadErr, e.ClientID)
	}
	if e.Next != "" {
		b.WriteString("\n" + e.Next)
	}
	return b.String()
}

// Unwrap returns Err.
func (e *ChangeError) Unwrap() error { return e.Err }

// Lock takes the change lock (internal/changelock) of clientID's key set at
// this API, waiting until ctx ends; Add, Remove and Rotate take it themselves.
func (c *Client) Lock(ctx context.Context, clientID string) (*changelock.Lock, error) {
	base := strings.TrimSuffix(c.BaseURL, "/")
	l, err := changelock.Acquire(ctx, "key-set", base, clientID)
	if err != nil {
		return nil, fmt.Errorf("admin: client %s: %w", clientID, err)
	}
	return l, nil
}

// write replaces clientID's set (before) with keys, the lock held, and
// judges the write by the set read back: keys, or a *ChangeError. op names
// the command that retries it.
func (c *Client) write(ctx context.Context, clientID string, before *KeySet, keys []Key, op string) (*KeySet, error) {
	var err error
	if len(keys) == 0 {
		err = c.do(ctx, http.MethodDelete, clientID, nil, nil)
	} else {
		raws := make([]json.RawMessage, len(keys))
		for i, k := range keys {
			raws[i] = k.Raw
		}
		body, merr := json.Marshal(map[string]any{"keys": raws})
		if merr != nil {
			return nil, fmt.Errorf("admin: %w", merr)
		}
		err = c.do(ctx, http.MethodPost, clientID, bytes.NewReader(body), nil)
	}
	// Read back even when the write failed: a lost answer says nothing of what the API did.
	got, rerr := c.readBack(ctx, clientID)
	want := (&KeySet{Keys: keys}).Kids()
	switch {
	case rerr == nil && sameKids(got.Kids(), want):
		return got, nil // done, whatever the write's answer said
	case err == nil && rerr != nil:
		err = fmt.Errorf("admin: the change was sent and answered, but reading it back failed")
	case err == nil:
		err = fmt.Errorf("admin: client %s: wrote the keys %s but read back %s: %w", clientID,
			textsafe.Escape(strings.Join(want, ", ")), got.kidList(), ErrChanged)
	}
	ce := &ChangeError{ClientID: clientID, Err: err, State: got, ReadErr: rerr}
	if rerr == nil && sameKids(got.Kids(), before.Kids()) {
		ce.Next = fmt.Sprintf("nothing was changed; to try again: mp-hsm admin keys %s --client-id %s ...", op, clientID)
	}
	return nil, ce
}

// readBack lists clientID's keys with a context of its own, so that a
// deadline that cut the write short still lets it report the truth.
func (c *Client) readBack(ctx context.Context, clientID string) (*KeySet, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readBackTimeout)
	defer cancel()
	return c.List(rctx, clientID)
}

// sameKids reports whether a and b hold the same kids, in any order.
func sameKids(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}
