package grant

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// Types of RFC 9396 authorization details that Maskinporten knows.
const (
	SystemUserType = "urn:altinn:systemuser" // an Altinn system user token (Request.SystemUserOrg)
	ConsentType    = "urn:altinn:consent"    // a consent token (Request.Consent)
)

// The two forms of a consent's from: a person by national identity number,
// or an organisation by organisation number.
const (
	PersonURNPrefix       = "urn:altinn:person:identifier-no:"
	OrganizationURNPrefix = "urn:altinn:organization:identifier-no:"
)

// Consent names a consent given in Altinn 3, sent as the authorization
// detail {"type":"urn:altinn:consent","id":"<ID>","from":"<From>"}. The zero
// value asks for none.
type Consent struct {
	ID string // the consent request's id, a UUID (77ed8698-e619-4066-9eb4-5c1eb3f165a1)
	// From is PersonURNPrefix and an 11-digit national identity number
	// (never in clear in errors or logs: MaskParty), or OrganizationURNPrefix
	// and a 9-digit organisation number.
	From string
}

// AuthorizationDetail is one element of an authorization_details array, as
// ParseAuthorizationDetails read it.
type AuthorizationDetail struct {
	Type    string  // the element's type, such as ConsentType
	Consent Consent // id and from of a ConsentType element; zero for others

	raw json.RawMessage // the element as given
}

// maxAuthorizationDetails bounds an authorization_details array.
const maxAuthorizationDetails = 16 << 10

// ParseAuthorizationDetails checks raw, an RFC 9396 authorization_details
// value (a JSON array of objects with a non-empty string "type", no member
// twice, ConsentType elements as Consent.Validate accepts), and returns its
// elements: the one check Request.Validate, the CLI and the daemon use. The
// *ValidationError never quotes a person's identity number in clear.
func ParseAuthorizationDetails(raw []byte) ([]AuthorizationDetail, error) {
	bad := func(reason string) error {
		return &ValidationError{Field: "authorization_details", Reason: reason}
	}
	if len(raw) > maxAuthorizationDetails {
		return nil, bad(fmt.Sprintf("longer than %d bytes", maxAuthorizationDetails))
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil || elems == nil {
		return nil, bad(`must be a JSON array of objects, such as [{"type":"urn:altinn:consent","id":"<UUID>","from":"<URN>"}]`)
	}
	if len(elems) == 0 {
		return nil, bad("the array is empty: give at least one object with a type, or leave it out")
	}
	details := make([]AuthorizationDetail, len(elems))
	for i, e := range elems {
		where := fmt.Sprintf("element %d", i+1)
		members, err := objectMembers(e)
		if err != nil {
			return nil, bad(where + ": " + err.Error())
		}
		d := AuthorizationDetail{raw: e}
		if err := json.Unmarshal(members["type"], &d.Type); err != nil || d.Type == "" {
			return nil, bad(where + `: "type" must be a non-empty string`)
		}
		if d.Type == ConsentType {
			if err := json.Unmarshal(members["id"], &d.Consent.ID); err != nil || d.Consent.ID == "" {
				return nil, bad(where + ` (` + ConsentType + `): "id" must be a string, the consent request's UUID`)
			}
			if err := json.Unmarshal(members["from"], &d.Consent.From); err != nil || d.Consent.From == "" {
				return nil, bad(where + ` (` + ConsentType + `): "from" must be a string, ` + PersonURNPrefix + `<national identity number> or ` + OrganizationURNPrefix + `<organisation number>`)
			}
			if err := d.Consent.Validate(); err != nil {
				var ve *ValidationError
				if errors.As(err, &ve) {
					ve.Reason = where + " (" + ConsentType + ") " + ve.Field[len("consent_"):] + ": " + ve.Reason
					ve.Field = "authorization_details"
				}
				return nil, err
			}
		}
		details[i] = d
	}
	return details, nil
}

// objectMembers reads the members of raw, one valid JSON value, refusing a
// member given twice: parsers disagree on which one counts, so a duplicated
// type could pass one check and mean another thing to Maskinporten.
func objectMembers(raw json.RawMessage) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, _ := dec.Token(); t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	m := map[string]json.RawMessage{}
	for dec.More() {
		t, _ := dec.Token()
		name, _ := t.(string)
		var v json.RawMessage
		_ = dec.Decode(&v)
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("the member %q is given twice", name)
		}
		m[name] = v
	}
	return m, nil
}

// Validate reports whether c can be sent: zero, or a UUID ID and a From of
// one of the two URN forms with valid check digits. The error is a
// *ValidationError for consent_id or consent_from, a person's number masked.
func (c Consent) Validate() error {
	switch {
	case c == Consent{}:
		return nil
	case c.From == "":
		return &ValidationError{Field: "consent_from", Reason: "missing: a consent id needs the from of the consent (" + PersonURNPrefix + "<national identity number> or " + OrganizationURNPrefix + "<organisation number>)"}
	case c.ID == "":
		return &ValidationError{Field: "consent_id", Reason: "missing: a consent's from needs the consent id (the consent request's UUID)"}
	}
	if _, err := uuid.Parse(c.ID); err != nil || len(c.ID) != 36 {
		return &ValidationError{Field: "consent_id", Value: c.ID, Reason: "not a UUID in its usual form (77ed8698-e619-4066-9eb4-5c1eb3f165a1)"}
	}
	pid, person := strings.CutPrefix(c.From, PersonURNPrefix)
	org, organisation := strings.CutPrefix(c.From, OrganizationURNPrefix)
	switch {
	case person && !ValidPID(pid):
		return &ValidationError{Field: "consent_from", Value: MaskParty(c.From), Reason: "not a valid national identity number (11 digits with two modulus-11 check digits)"}
	case organisation && !ValidOrgNumber(org):
		return &ValidationError{Field: "consent_from", Value: c.From, Reason: badOrgNumber}
	case !person && !organisation:
		return &ValidationError{Field: "consent_from", Value: MaskParty(c.From), Reason: "must be " + PersonURNPrefix + "<national identity number> or " + OrganizationURNPrefix + "<organisation number>"}
	}
	return nil
}

// systemUserDetail is the element asking for the Altinn system user of orgnr.
// Its members and the consent's are in the documented order, so that the
// same element given as AuthorizationDetails is the same claim (and cache key).
func systemUserDetail(orgnr string) json.RawMessage {
	type partyOrg struct {
		Authority string `json:"authority"`
		ID        string `json:"ID"`
	}
	b, _ := json.Marshal(struct {
		Type          string   `json:"type"`
		SystemUserOrg partyOrg `json:"systemuser_org"`
	}{SystemUserType, partyOrg{Authority: "iso6523-actorid-upis", ID: "0192:" + orgnr}})
	return b
}

// detail is the consent's authorization detail as sent.
func (c Consent) detail() json.RawMessage {
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		From string `json:"from"`
	}{ConsentType, c.ID, c.From})
	return b
}

// MaskParty returns a party's URN for messages and logs: an organisation's
// as it is, anything else (it may hold an identity number, perhaps
// mistyped) masked by MaskPID from the ':'-separated part with its first
// digit on (without a digit: after its last ':').
func MaskParty(urn string) string {
	if org, ok := strings.CutPrefix(urn, OrganizationURNPrefix); ok && ValidOrgNumber(org) {
		return urn
	}
	end := strings.IndexAny(urn, "0123456789")
	if end < 0 {
		end = len(urn)
	}
	i := strings.LastIndexByte(urn[:end], ':') + 1
	return urn[:i] + MaskPID(urn[i:])
}
