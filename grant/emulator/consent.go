package emulator

import (
	"slices"
	"time"
)

// consentType is the authorization_details type of a consent token.
const consentType = "urn:altinn:consent"

// Consent is an Altinn 3 consent a grant may name in authorization_details as
// {"type":"urn:altinn:consent","id":"<ID>","from":"<From>"} to get a consent token, whose
// element also carries to, consented, validTo and consentRights.
type Consent struct {
	ID string // the consent request's id, a UUID
	// From is who gave the consent: urn:altinn:person:identifier-no:<11
	// digits> or urn:altinn:organization:identifier-no:<9 digits>.
	From string
	// To is the 9-digit organisation number the consent was given to: the
	// client's owner, or with consumer_org the delegating organisation.
	To        string
	Consented time.Time // when it was given; if zero, when the server was made
	ValidTo   time.Time // when it runs out; if zero, a year after Consented
	// Rights are copied to consentRights. If empty, action "consent" on
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

// parseConsentDetail checks the documented shape
// {"type":"urn:altinn:consent","id":"<UUID>","from":"<URN>"}.
func parseConsentDetail(d map[string]any) (*Consent, *rejection) {
	if rej := onlyFields(d, "", "type", "id", "from"); rej != nil {
		return nil, rej
	}
	c := &Consent{}
	if c.ID, _ = d["id"].(string); c.ID == "" {
		return nil, mp("consent", "id must be the consent request's id, a string.")
	}
	if c.From, _ = d["from"].(string); c.From == "" {
		return nil, mp("consent", "from must be a string naming who gave the consent.")
	}
	return c, nil
}

// consentFor finds the consent req names, from the party named, given to consumer and
// still valid. Descriptions never repeat from: it may be a person's identity number.
func (s *Server) consentFor(req Consent, consumer string, now time.Time) (*Consent, *rejection) {
	i := slices.IndexFunc(s.cfg.Consents, func(c Consent) bool { return c.ID == req.ID })
	if i < 0 {
		return nil, mp("consent", "No consent with id "+req.ID+" is known.")
	}
	switch c := &s.cfg.Consents[i]; {
	case c.From != req.From:
		return nil, mp("consent", "Consent "+req.ID+" was not given by the party named in from.")
	case c.To != consumer:
		return nil, mp("consent", "Consent "+req.ID+" was given to organisation "+c.To+", not to "+consumer+".")
	case !now.Before(c.ValidTo):
		return nil, mp("consent", "Consent "+req.ID+" expired at "+consentTime(c.ValidTo)+".")
	default:
		return c, nil
	}
}

// consentClaim is the consent's element of the token's authorization_details.
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

// consentTime writes a time as Altinn does: 2026-01-15T10:34:39.676924+00:00.
func consentTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.999999-07:00")
}
