package emulator

import (
	"encoding/json"
	"time"
)

// consentType is the authorization_details type of a consent token.
const consentType = "urn:altinn:consent"

// Consent is a consent given in Altinn 3 (Config.Consents) that a grant may
// name in authorization_details,
//
//	[{"type":"urn:altinn:consent","id":"<ID>","from":"<From>"}]
//
// to get a consent token: an access token whose authorization_details also
// carry to, consented, validTo and consentRights.
type Consent struct {
	// ID is the consent request's id, a UUID.
	ID string

	// From is who gave the consent, exactly as grants must name it:
	// urn:altinn:person:identifier-no:<11-digit number> or
	// urn:altinn:organization:identifier-no:<9-digit number>.
	From string

	// To is the 9-digit organisation number the consent was given to. A
	// grant may use the consent only if To is the organisation that owns
	// the client or, with consumer_org, the organisation that delegated
	// the scopes (as Maskinporten requires).
	To string

	// Consented is when the consent was given. If zero, when the server
	// was made.
	Consented time.Time

	// ValidTo is when the consent runs out; a grant that names it later is
	// refused. If zero, a year after Consented.
	ValidTo time.Time

	// Rights are the consent's rights, copied to consentRights. If empty,
	// one right: action "consent" on the resource
	// {"type":"urn:altinn:resource","value":"mp-hsm-emulator"}.
	Rights []ConsentRight
}

// ConsentRight is one element of a consent token's consentRights.
type ConsentRight struct {
	Action   []string          `json:"action"`
	Resource []ConsentResource `json:"resource"`
	MetaData map[string]string `json:"metaData,omitempty"`
}

// ConsentResource names a resource a consent right is for, such as
// {"type":"urn:altinn:resource","value":"standard-samtykke-for-dele-data"}.
type ConsentResource struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// consentRequest is one element of authorization_details of type
// urn:altinn:consent.
type consentRequest struct{ id, from string }

// parseConsentDetail checks the documented shape
// {"type":"urn:altinn:consent","id":"<UUID>","from":"<URN>"}.
func parseConsentDetail(d map[string]json.RawMessage) (consentRequest, *rejection) {
	var c consentRequest
	for name := range d {
		switch name {
		case "type", "id", "from":
		default:
			return c, mp("MP-302", "Field "+name+" is not known for "+consentType+".")
		}
	}
	if err := json.Unmarshal(d["id"], &c.id); err != nil || c.id == "" {
		return c, mp("consent", "id must be the consent request's id, a string.")
	}
	if err := json.Unmarshal(d["from"], &c.from); err != nil || c.from == "" {
		return c, mp("consent", "from must be a string naming who gave the consent.")
	}
	return c, nil
}

// consentFor checks a consent the grant names against the known consents:
// it must exist, be from the party named, be given to consumer (the
// client's organisation, or the one named in consumer_org) and still be
// valid. The descriptions never repeat from: it may be a person's
// identity number.
func (s *Server) consentFor(req consentRequest, consumer string, now time.Time) (*Consent, *rejection) {
	var c *Consent
	for i := range s.cfg.Consents {
		if s.cfg.Consents[i].ID == req.id {
			c = &s.cfg.Consents[i]
			break
		}
	}
	switch {
	case c == nil:
		return nil, mp("consent", "No consent with id "+req.id+" is known.")
	case c.From != req.from:
		return nil, mp("consent", "Consent "+req.id+" was not given by the party named in from.")
	case c.To != consumer:
		return nil, mp("consent", "Consent "+req.id+" was given to organisation "+c.To+", not to "+consumer+".")
	case !now.Before(c.ValidTo):
		return nil, mp("consent", "Consent "+req.id+" expired at "+consentTime(c.ValidTo)+".")
	}
	return c, nil
}

// consentClaim is the consent's element of the token's
// authorization_details, shaped as Altinn documents it.
func (s *Server) consentClaim(c *Consent) map[string]any {
	rights := c.Rights
	if len(rights) == 0 {
		rights = []ConsentRight{{Action: []string{"consent"},
			Resource: []ConsentResource{{Type: "urn:altinn:resource", Value: "mp-hsm-emulator"}}}}
	}
	return map[string]any{
		"type":          consentType,
		"id":            c.ID,
		"from":          c.From,
		"to":            orgID(c.To),
		"consented":     consentTime(c.Consented),
		"validTo":       consentTime(c.ValidTo),
		"consentRights": rights,
	}
}

// consentTime writes a time as Altinn's consent tokens do:
// 2026-01-15T10:34:39.676924+00:00.
func consentTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.999999-07:00")
}
