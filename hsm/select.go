package hsm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// TokenSelector chooses a token. Every field that is set must match; the
// zero TokenSelector chooses the only token present.
type TokenSelector struct {
	SlotID       *uint  // the slot ID as the module reports it
	Label        string // CKA token label, exact
	Serial       string // token serial number, exact
	Manufacturer string // token manufacturer ID, exact
	Model        string // token model, exact

	SlotDescription  string // the slot's description (CK_SLOT_INFO), exact
	SlotManufacturer string // the slot's manufacturer ID (CK_SLOT_INFO), exact

	// The module itself (C_GetInfo) must match these, or FindSlot finds no token.
	LibraryManufacturer string // the module's manufacturer ID, exact
	LibraryDescription  string // the module's library description, exact
	LibraryVersion      string // "M.N", or "M" meaning M.0 as p11-kit reads RFC 7512
}

// IsZero reports whether the selector chooses nothing in particular.
func (s TokenSelector) IsZero() bool { return s == TokenSelector{} }

// String describes the selection, as in "slot 0, label \"x\"".
func (s TokenSelector) String() string {
	var parts []string
	if s.SlotID != nil {
		parts = append(parts, "slot "+strconv.FormatUint(uint64(*s.SlotID), 10))
	}
	for _, f := range []struct{ name, v string }{
		{"label", s.Label}, {"serial", s.Serial}, {"manufacturer", s.Manufacturer}, {"model", s.Model},
		{"slot-description", s.SlotDescription}, {"slot-manufacturer", s.SlotManufacturer},
		{"library-manufacturer", s.LibraryManufacturer}, {"library-description", s.LibraryDescription},
		{"library-version", s.LibraryVersion},
	} {
		if f.v != "" {
			parts = append(parts, fmt.Sprintf("%s %q", f.name, f.v))
		}
	}
	return strings.Join(parts, ", ")
}

// matching returns the slots whose initialised token matches s.
func (s TokenSelector) matching(slots []Slot) []Slot {
	var out []Slot
	for _, sl := range slots {
		t := sl.Token
		if t != nil && t.Flags.Initialized() &&
			(s.SlotID == nil || *s.SlotID == sl.ID) &&
			(s.SlotDescription == "" || s.SlotDescription == sl.Description) &&
			(s.SlotManufacturer == "" || s.SlotManufacturer == sl.Manufacturer) &&
			(s.Label == "" || s.Label == t.Label) &&
			(s.Serial == "" || s.Serial == t.Serial) &&
			(s.Manufacturer == "" || s.Manufacturer == t.Manufacturer) &&
			(s.Model == "" || s.Model == t.Model) {
			out = append(out, sl)
		}
	}
	return out
}

// checkLibrary returns a *SelectionError (tokenerr.ErrTokenNotFound) saying
// what the module is when it does not match s's library fields. The caller
// is inside m.gate.
func (m *Module) checkLibrary(s TokenSelector) error {
	if s.LibraryManufacturer == "" && s.LibraryDescription == "" && s.LibraryVersion == "" {
		return nil
	}
	i, err := m.p.GetInfo()
	if err != nil {
		return wrap("C_GetInfo", err)
	}
	manuf, desc := trimPadded(i.ManufacturerID), trimPadded(i.LibraryDescription)
	ok := (s.LibraryManufacturer == "" || s.LibraryManufacturer == manuf) &&
		(s.LibraryDescription == "" || s.LibraryDescription == desc)
	if ok && s.LibraryVersion != "" {
		major, minor, valid := parseVersion(s.LibraryVersion)
		if !valid {
			return &SelectionError{Kind: tokenerr.ErrTokenNotFound, Wanted: s.String(),
				Candidates: []string{"library-version must be M or M.N, decimal numbers up to 255"}}
		}
		ok = major == i.LibraryVersion.Major && minor == i.LibraryVersion.Minor
	}
	if ok {
		return nil
	}
	return &SelectionError{Kind: tokenerr.ErrTokenNotFound, Wanted: s.String(), Candidates: []string{fmt.Sprintf(
		"module %s is library-manufacturer %q, library-description %q, library-version %d.%d",
		m.lib.path, manuf, desc, i.LibraryVersion.Major, i.LibraryVersion.Minor)}}
}

// parseVersion reads "M" or "M.N" (decimal, each at most 255); "M" is M.0.
func parseVersion(v string) (major, minor byte, ok bool) {
	ms, ns, dot := strings.Cut(v, ".")
	if !dot {
		ns = "0"
	}
	a, errA := strconv.ParseUint(ms, 10, 8)
	b, errB := strconv.ParseUint(ns, 10, 8)
	return byte(a), byte(b), errA == nil && errB == nil
}

// describeTokens lists tokens the way a person picks one: slot, label, serial.
func describeTokens(slots []Slot) []string {
	out := make([]string, len(slots))
	for i, s := range slots {
		out[i] = fmt.Sprintf("slot %d label %q serial %q", s.ID, s.Token.Label, s.Token.Serial)
	}
	return out
}

// FindSlot returns the one slot whose initialised token matches sel, with no
// login; else a *SelectionError: tokenerr.ErrSlotNotFound for an unknown
// slot ID, ErrNoToken for a slot without a token, ErrTokenNotFound listing
// the tokens, or ErrAmbiguousToken listing the matches. Unless sel names a
// slot field, it reads only the tokens' information (a round trip per call
// on a network HSM) and leaves the Slot's own fields empty.
func (m *Module) FindSlot(sel TokenSelector) (_ Slot, err error) {
	defer func() { // what the module wrote while loading may say why no token was found
		if se := (*SelectionError)(nil); errors.As(err, &se) && se.Kind != tokenerr.ErrAmbiguousToken {
			se.ModuleOutput = m.lib.loadOutput
		}
	}()
	if err := m.enter("find slot"); err != nil {
		return Slot{}, err
	}
	defer m.gate.leave()
	if err := m.checkLibrary(sel); err != nil {
		return Slot{}, err
	}
	if sel.SlotDescription == "" && sel.SlotManufacturer == "" {
		if slots, err := m.slots(false); err == nil {
			if matched := sel.matching(slots); len(matched) == 1 {
				return matched[0], nil
			}
		}
	}
	slots, err := m.slots(true)
	if err != nil {
		return Slot{}, err
	}
	fail := func(kind error, tokens []Slot, candidates ...string) (Slot, error) {
		return Slot{}, &SelectionError{Kind: kind, Wanted: sel.String(), Candidates: candidates, Tokens: tokens}
	}
	var present []Slot
	for _, s := range slots {
		switch {
		case s.Token == nil:
		case !s.Token.Flags.Initialized():
			// An uninitialised token (SoftHSM2's free slot, a blank card)
			// holds no keys: never choose it.
			if sel.SlotID != nil && *sel.SlotID == s.ID {
				return fail(tokenerr.ErrNoToken, slots, fmt.Sprintf("the token in slot %d is not initialised", s.ID))
			}
		default:
			present = append(present, s)
		}
	}
	switch matched := sel.matching(present); {
	case len(matched) == 1:
		return matched[0], nil
	case len(matched) > 1:
		return fail(tokenerr.ErrAmbiguousToken, matched, describeTokens(matched)...)
	}
	if sel.SlotID != nil {
		i := slices.IndexFunc(slots, func(s Slot) bool { return s.ID == *sel.SlotID })
		if i < 0 {
			var ids []string
			for _, s := range slots {
				ids = append(ids, s.String())
			}
			return fail(tokenerr.ErrSlotNotFound, slots, ids...)
		}
		if slots[i].Token == nil {
			return fail(tokenerr.ErrNoToken, slots, "insert the card or token into slot "+strconv.FormatUint(uint64(*sel.SlotID), 10))
		}
	}
	if len(present) == 0 {
		return fail(tokenerr.ErrNoToken, slots, "no slot holds a token; insert the card (is pcscd running?)")
	}
	return fail(tokenerr.ErrTokenNotFound, present, describeTokens(present)...)
}

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

// FindKey finds the private key to sign with, once: the Key keeps its handle
// for every signature. It usually needs Login first. With an ID or label,
// the one key that matches; with neither, the one signing key whose
// certificate is for authentication (KeyInfo.Authentication), or else the
// only key that can sign. No match gives tokenerr.ErrKeyNotFound, several
// ErrAmbiguousKey, both as a *SelectionError listing the keys.
func (t *Token) FindKey(sel KeySelector) (*Key, error) {
	objs, err := t.lockedKeys("find key")
	if err != nil {
		return nil, err
	}
	all := infos(objs)
	fail := func(kind error, wanted string, ks []keyObject) (*Key, error) {
		e := &SelectionError{Kind: kind, Wanted: wanted, Candidates: make([]string, len(ks)), Keys: all}
		for i, k := range ks {
			e.Candidates[i] = k.info.String()
		}
		return nil, e
	}
	if len(sel.ID) > 0 || sel.Label != "" {
		var matched []keyObject
		for _, o := range objs {
			if (len(sel.ID) == 0 || bytes.Equal(sel.ID, o.info.ID)) && (sel.Label == "" || sel.Label == o.info.Label) {
				matched = append(matched, o)
			}
		}
		switch len(matched) {
		case 0:
			return fail(tokenerr.ErrKeyNotFound, sel.String(), objs)
		case 1:
			return t.newKey(matched[0])
		}
		return fail(tokenerr.ErrAmbiguousKey, sel.String(), matched)
	}
	var signers, auth []keyObject
	for _, o := range objs {
		if o.info.CanSign {
			signers = append(signers, o)
			if o.info.Authentication() {
				auth = append(auth, o)
			}
		}
	}
	for _, ks := range [][]keyObject{auth, signers} {
		if len(ks) == 1 {
			return t.newKey(ks[0])
		} else if len(ks) > 1 {
			return fail(tokenerr.ErrAmbiguousKey, "", ks)
		}
	}
	return fail(tokenerr.ErrKeyNotFound, "", objs)
}

// SelectorsFromURI returns the token and key selection of the RFC 7512 URI
// u's path attributes (object is the label; type private, public or cert all
// lead to the key pair). A type that cannot name a signing key and a vendor
// ("x-") attribute, which would be ignored, give a *pkcs11uri.Error matching
// pkcs11uri.ErrInvalid. The query (module, PIN) is the caller's.
func SelectorsFromURI(u *pkcs11uri.URI) (TokenSelector, KeySelector, error) {
	switch u.Type {
	case "", "private", "public", "cert":
	default:
		return TokenSelector{}, KeySelector{}, u.AttrError("type",
			"type="+u.Type+" cannot name a signing key; use type=private or leave type out")
	}
	if len(u.Vendor) > 0 {
		name := slices.Sorted(maps.Keys(u.Vendor))[0]
		return TokenSelector{}, KeySelector{}, u.AttrError(name, fmt.Sprintf(
			"mp-hsm knows no vendor attribute, and %s would be ignored; remove it", name))
	}
	ts := TokenSelector{
		Label: u.Token, Serial: u.Serial, Manufacturer: u.Manufacturer, Model: u.Model,
		SlotDescription: u.SlotDescription, SlotManufacturer: u.SlotManufacturer,
		LibraryManufacturer: u.LibraryManufacturer, LibraryDescription: u.LibraryDescription,
		LibraryVersion: u.LibraryVersion,
	}
	if u.SlotID != nil {
		id := *u.SlotID
		ts.SlotID = &id
	}
	return ts, KeySelector{ID: u.ID, Label: u.Object}, nil
}
