package grant

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
)

const (
	consentID  = "77ed8698-e619-4066-9eb4-5c1eb3f165a1"
	consentID2 = "93413201-b7e8-4ec3-a899-580fc02c6aeb"
	personFNR  = "01019012480" // valid check digits
	personDNR  = "41019012474" // a D-number: day + 40
	personFrom = PersonURNPrefix + personFNR
)

// TestConsentRefusals: each malformed consent or authorization_details is
// refused with a *ValidationError naming the field, and no message or
// Value shows the identity number in clear.
func TestConsentRefusals(t *testing.T) {
	badFNR := "01019012481"  // second check digit wrong
	badFNR1 := "01019012470" // first check digit wrong
	for _, tc := range []struct {
		name  string
		req   Request
		field string
		want  string // in the reason
	}{
		{"id without from", Request{Consent: Consent{ID: consentID}}, "consent_from", "missing"},
		{"from without id", Request{Consent: Consent{From: personFrom}}, "consent_id", "missing"},
		{"id not a UUID", Request{Consent: Consent{ID: "77ed8698", From: personFrom}}, "consent_id", "UUID"},
		{"id a UUID URN", Request{Consent: Consent{ID: "urn:uuid:" + consentID, From: personFrom}}, "consent_id", "UUID"},
		{"id without hyphens", Request{Consent: Consent{ID: strings.ReplaceAll(consentID, "-", ""), From: personFrom}}, "consent_id", "UUID"},
		{"fnr second check digit", Request{Consent: Consent{ID: consentID, From: PersonURNPrefix + badFNR}}, "consent_from", "national identity number"},
		{"fnr first check digit", Request{Consent: Consent{ID: consentID, From: PersonURNPrefix + badFNR1}}, "consent_from", "national identity number"},
		{"fnr too short", Request{Consent: Consent{ID: consentID, From: PersonURNPrefix + "0101901248"}}, "consent_from", "national identity number"},
		{"orgnr check digit", Request{Consent: Consent{ID: consentID, From: OrganizationURNPrefix + "974760674"}}, "consent_from", "organisation number"},
		{"neither URN form", Request{Consent: Consent{ID: consentID, From: "urn:altinn:person:pid:" + personFNR}}, "consent_from", "must be"},
		{"bare fnr", Request{Consent: Consent{ID: consentID, From: personFNR}}, "consent_from", "must be"},
		{"details not JSON", Request{AuthorizationDetails: json.RawMessage(`[{"type":`)}, "authorization_details", "JSON array"},
		{"details an object", Request{AuthorizationDetails: json.RawMessage(`{"type":"x"}`)}, "authorization_details", "JSON array"},
		{"details null", Request{AuthorizationDetails: json.RawMessage(`null`)}, "authorization_details", "JSON array"},
		{"details empty", Request{AuthorizationDetails: json.RawMessage(`[]`)}, "authorization_details", "empty"},
		{"element not an object", Request{AuthorizationDetails: json.RawMessage(`["urn:x"]`)}, "authorization_details", "element 1: not a JSON object"},
		{"element without type", Request{AuthorizationDetails: json.RawMessage(`[{"type":"a"},{"id":"x"}]`)}, "authorization_details", `element 2: "type"`},
		{"empty type", Request{AuthorizationDetails: json.RawMessage(`[{"type":""}]`)}, "authorization_details", `"type"`},
		{"type not a string", Request{AuthorizationDetails: json.RawMessage(`[{"type":7}]`)}, "authorization_details", `"type"`},
		{"type twice", Request{AuthorizationDetails: json.RawMessage(`[{"type":"urn:a","type":"urn:b"}]`)}, "authorization_details", "twice"},
		{"consent element bad fnr", Request{AuthorizationDetails: json.RawMessage(`[{"type":"urn:altinn:consent","id":"` + consentID + `","from":"` + PersonURNPrefix + badFNR + `"}]`)}, "authorization_details", "national identity number"},
		{"consent element without id", Request{AuthorizationDetails: json.RawMessage(`[{"type":"urn:altinn:consent","from":"` + personFrom + `"}]`)}, "authorization_details", `"id"`},
		{"consent element from a number", Request{AuthorizationDetails: json.RawMessage(`[{"type":"urn:altinn:consent","id":"` + consentID + `","from":1019012480}]`)}, "authorization_details", `"from"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Scopes = []string{"altinn:consentrequests.read"}
			err := tc.req.Validate()
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("Validate() = %v, want a *ValidationError", err)
			}
			if ve.Field != tc.field || !strings.Contains(ve.Reason, tc.want) {
				t.Errorf("Field %q, Reason %q; want %q and a reason with %q", ve.Field, ve.Reason, tc.field, tc.want)
			}
			for _, n := range []string{badFNR, badFNR1, personFNR, "1019012480"} {
				if strings.Contains(err.Error(), n) {
					t.Errorf("the error shows the identity number %s: %v", n, err)
				}
			}
		})
	}
}

func TestConsentAccepted(t *testing.T) {
	for _, r := range []Request{
		{Consent: Consent{ID: consentID, From: personFrom}},
		{Consent: Consent{ID: strings.ToUpper(consentID), From: PersonURNPrefix + personDNR}},
		{Consent: Consent{ID: consentID, From: OrganizationURNPrefix + "974760673"}},
		{AuthorizationDetails: json.RawMessage(` [ {"type":"urn:example:future", "x": {"y": [1, 2]}} ] `)},
		{SystemUserOrg: "910000004", Consent: Consent{ID: consentID, From: personFrom},
			AuthorizationDetails: json.RawMessage(`[{"type":"urn:altinn:consent","id":"` + consentID2 + `","from":"` + OrganizationURNPrefix + `974760673"}]`)},
	} {
		r.Scopes = []string{"a"}
		if err := r.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", r, err)
		}
	}
}

// TestMaskParty: a person's number shows its first six digits; an
// organisation's URN is shown; unknown text is masked from its first
// digit's segment on, so that a number followed by ':' is masked too (before,
// only the text after the last ':' was).
func TestMaskParty(t *testing.T) {
	for in, want := range map[string]string{
		personFrom:                            PersonURNPrefix + "010190*****",
		OrganizationURNPrefix + "974760673":   OrganizationURNPrefix + "974760673",
		OrganizationURNPrefix + "01019012480": OrganizationURNPrefix + "010190*****",
		"urn:x:" + personFNR:                  "urn:x:010190*****",
		personFNR:                             "010190*****",
		PersonURNPrefix + personFNR + ":x":    PersonURNPrefix + "010190*******",
		personFNR + ":x":                      "010190*******",
	} {
		if got := MaskParty(in); got != want {
			t.Errorf("MaskParty(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestGrantAuthorizationDetailsOneArray: the system user, the consent and
// the caller's own elements go in one authorization_details array, in that
// order, the caller's as given.
func TestGrantAuthorizationDetailsOneArray(t *testing.T) {
	p := thePKI(t)
	cfg := &Config{ClientID: "c", Signer: p.kidSigner(t), KeyID: "k", Environment: Prod}
	g, err := cfg.Grant(Request{
		Scopes: []string{"a"}, SystemUserOrg: "974760673",
		Consent:              Consent{ID: consentID, From: personFrom},
		AuthorizationDetails: json.RawMessage(`[ {"type": "urn:example:future", "z": [1, {"a": null}]} ]`),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, c := decodeJWT(t, g, p, 0)
	ad, _ := json.Marshal(c["authorization_details"])
	want := `[{"systemuser_org":{"ID":"0192:974760673","authority":"iso6523-actorid-upis"},"type":"urn:altinn:systemuser"},` +
		`{"from":"` + personFrom + `","id":"` + consentID + `","type":"urn:altinn:consent"},` +
		`{"type":"urn:example:future","z":[1,{"a":null}]}]`
	if string(ad) != want {
		t.Errorf("authorization_details =\n%s\nwant\n%s", ad, want)
	}
}

// TestConsentCacheKey: requests that differ only in their consent, or in
// their own authorization details, never share a token; the same consent
// does.
func TestConsentCacheKey(t *testing.T) {
	srv := emulator.NewTest(t, emulator.Config{
		Roots:   []*x509.Certificate{thePKI(t).root},
		Clients: []emulator.Client{{ID: testClient, OrgNumber: testOrg, Scopes: []string{"altinn:consentrequests.read"}}},
		Consents: []emulator.Consent{
			{ID: consentID, From: personFrom, To: testOrg},
			{ID: consentID2, From: OrganizationURNPrefix + "910000004", To: testOrg},
		},
		Logf: func(string, ...any) {},
	})
	cfg := testConfig(t, srv, 0)
	ctx := context.Background()
	scopes := []string{"altinn:consentrequests.read"}
	sources := map[string]oauth2.TokenSource{} // one per claim, as a caller keeps them
	token := func(r Request) string {
		t.Helper()
		r.Scopes = scopes
		n, err := r.normalize()
		if err != nil {
			t.Fatal(err)
		}
		if sources[string(n.authzDetails)] == nil {
			sources[string(n.authzDetails)] = cfg.TokenSource(ctx, r)
		}
		tok, err := sources[string(n.authzDetails)].Token()
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	a := token(Request{Consent: Consent{ID: consentID, From: personFrom}})
	b := token(Request{Consent: Consent{ID: consentID2, From: OrganizationURNPrefix + "910000004"}})
	// The same consent given as JSON is the same claim: the same token.
	c := token(Request{AuthorizationDetails: json.RawMessage(`[{"type":"urn:altinn:consent","id":"` + consentID + `","from":"` + personFrom + `"}]`)})
	a2 := token(Request{Consent: Consent{ID: consentID, From: personFrom}})
	if a == b {
		t.Error("two consents shared a token")
	}
	if a != a2 || a != c {
		t.Error("the same consent asked again got another token: not cached")
	}
	if got := srv.Stats().Issued; got != 2 {
		t.Errorf("emulator issued %d tokens, want 2", got)
	}

	// Every part of authorization_details is in the claim.
	keyOf := func(r Request) string {
		r.Scopes = scopes
		n, err := r.normalize()
		if err != nil {
			t.Fatal(err)
		}
		return string(n.authzDetails)
	}
	keys := map[string]string{}
	for name, r := range map[string]Request{
		"none":        {},
		"consent":     {Consent: Consent{ID: consentID, From: personFrom}},
		"consent 2":   {Consent: Consent{ID: consentID2, From: personFrom}},
		"from 2":      {Consent: Consent{ID: consentID, From: PersonURNPrefix + personDNR}},
		"own":         {AuthorizationDetails: json.RawMessage(`[{"type":"urn:example:a"}]`)},
		"own 2":       {AuthorizationDetails: json.RawMessage(`[{"type":"urn:example:a","x":1}]`)},
		"system user": {SystemUserOrg: "910000004"},
		"both":        {SystemUserOrg: "910000004", Consent: Consent{ID: consentID, From: personFrom}},
	} {
		k := keyOf(r)
		if other, ok := keys[k]; ok {
			t.Errorf("%s and %s have the same cache key", name, other)
		}
		keys[k] = name
	}
}
