package hsm

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// KeySelector chooses a private key. The zero KeySelector chooses the
// default key (see FindKey).
type KeySelector struct {
	ID    []byte // CKA_ID, exact
	Label string // CKA_LABEL, exact
}

// String describes the selection, as in "id 01, label \"x\"".
func (s KeySelector) String() string {
	var parts []string
	if len(s.ID) > 0 {
		parts = append(parts, "id "+hex.EncodeToString(s.ID))
	}
	if s.Label != "" {
		parts = append(parts, fmt.Sprintf("label %q", s.Label))
	}
	return strings.Join(parts, ", ")
}

// FindKey finds the private key to sign with, once; the Key keeps its handle
// for every later signature. It usually needs Login first.
//
// With an ID or label, the one private key that matches. With neither: the
// one signing key whose certificate is for authentication (keyUsage
// digitalSignature without nonRepudiation), as on a Buypass or Commfides
// card; failing that, the only private key that can sign. No match gives
// tokenerr.ErrKeyNotFound and several give tokenerr.ErrAmbiguousKey, both as a
// *SelectionError listing the keys.
func (t *Token) FindKey(sel KeySelector) (*Key, error) {
	if err := t.enter("find key"); err != nil {
		return nil, err
	}
	defer t.leave()
	t.mu.Lock()
	objs, err := t.keys()
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	all := make([]KeyInfo, len(objs))
	for i, o := range objs {
		all[i] = o.info
	}
	describe := func(ks []keyObject) []string {
		out := make([]string, len(ks))
		for i, k := range ks {
			out[i] = k.info.String()
		}
		return out
	}
	var matched []keyObject
	if len(sel.ID) > 0 || sel.Label != "" {
		for _, o := range objs {
			if (len(sel.ID) == 0 || bytes.Equal(sel.ID, o.info.ID)) && (sel.Label == "" || sel.Label == o.info.Label) {
				matched = append(matched, o)
			}
		}
		switch len(matched) {
		case 0:
			return nil, &SelectionError{Kind: tokenerr.ErrKeyNotFound, Wanted: sel.String(), Candidates: describe(objs), Keys: all}
		case 1:
			return t.newKey(matched[0])
		default:
			return nil, &SelectionError{Kind: tokenerr.ErrAmbiguousKey, Wanted: sel.String(), Candidates: describe(matched), Keys: all}
		}
	}
	var signers, auth []keyObject
	for _, o := range objs {
		if !o.info.CanSign {
			continue
		}
		signers = append(signers, o)
		if o.info.Authentication() {
			auth = append(auth, o)
		}
	}
	switch {
	case len(auth) == 1:
		return t.newKey(auth[0])
	case len(auth) > 1:
		return nil, &SelectionError{Kind: tokenerr.ErrAmbiguousKey, Candidates: describe(auth), Keys: all}
	case len(signers) == 1:
		return t.newKey(signers[0])
	case len(signers) > 1:
		return nil, &SelectionError{Kind: tokenerr.ErrAmbiguousKey, Candidates: describe(signers), Keys: all}
	}
	return nil, &SelectionError{Kind: tokenerr.ErrKeyNotFound, Candidates: describe(objs), Keys: all}
}
