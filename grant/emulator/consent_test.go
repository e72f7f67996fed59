package emulator_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
)

const (
	consentPerson    = "77ed8698-e619-4066-9eb4-5c1eb3f165a1" // from fnrConsent, to orgA
	consentOrg       = "93413201-b7e8-4ec3-a899-580fc02c6aeb" // from orgSysUser, to orgOther
	consentDelegated = "ecbff842-199b-45c9-8b58-80ed4d813660" // from fnrConsent, to orgDelegate
	consentExpired   = "b55b0a8c-46db-4239-a417-a89daabfabba" // from fnrConsent, to orgA, expired
	fnrConsent       = "01019012480"
	fromPerson       = "urn:altinn:person:identifier-no:" + fnrConsent
)

func withConsents(c *emulator.Config) {
	c.Consents = []emulator.Consent{
		{ID: consentPerson, From: fromPerson, To: orgA, Consented: t0.Add(-time.Hour), ValidTo: t0.Add(24 * time.Hour),
			Rights: []emulator.ConsentRight{{Action: []string{"consent"},
				Resource: []emulator.ConsentResource{{Type: "urn:altinn:resource", Value: "standard-samtykke-for-dele-data"}},
				MetaData: map[string]string{"inntektsaar": "2028"}}}},
		{ID: consentOrg, From: "urn:altinn:organization:identifier-no:" + orgSysUser, To: orgOther},
		{ID: consentDelegated, From: fromPerson, To: orgDelegate},
		{ID: consentExpired, From: fromPerson, To: orgA, Consented: t0.Add(-48 * time.Hour), ValidTo: t0.Add(-time.Hour)},
	}
}

func consentDetail(id, from string) map[string]any {
	return map[string]any{"type": "urn:altinn:consent", "id": id, "from": from}
}

// TestConsentRejections: a consent the emulator does not know, one from
// another party, one given to another organisation, or one expired, is
// refused with 400 invalid_authorization_details, and the description
// never holds the identity number.
func TestConsentRejections(t *testing.T) {
	e := newEnv(t, withConsents)
	for _, tc := range []struct {
		name, want string
		details    []any
		consumer   string
	}{
		{"unknown id", "No consent with id 11111111-2222-4333-8444-555555555555", []any{consentDetail("11111111-2222-4333-8444-555555555555", fromPerson)}, ""},
		{"another from", "not given by the party named in from", []any{consentDetail(consentPerson, "urn:altinn:person:identifier-no:15058012359")}, ""},
		{"given to another organisation", "given to organisation " + orgOther + ", not to " + orgA, []any{consentDetail(consentOrg, "urn:altinn:organization:identifier-no:"+orgSysUser)}, ""},
		{"given to the delegator, asked without consumer_org", "not to " + orgA, []any{consentDetail(consentDelegated, fromPerson)}, ""},
		{"given to the client, asked for the delegator", "not to " + orgDelegate, []any{consentDetail(consentPerson, fromPerson)}, orgDelegate},
		{"expired", "expired at", []any{consentDetail(consentExpired, fromPerson)}, ""},
		{"id missing", "id must be", []any{map[string]any{"type": "urn:altinn:consent", "from": fromPerson}}, ""},
		{"unknown field", "Field to is not known", []any{map[string]any{"type": "urn:altinn:consent", "id": consentPerson, "from": fromPerson, "to": orgA}}, ""},
		{"two consents", "one party per request", []any{consentDetail(consentPerson, fromPerson), consentDetail(consentPerson, fromPerson)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := e.x5cGrant()
			s.claims["authorization_details"] = tc.details
			if tc.consumer != "" {
				s.claims["consumer_org"] = tc.consumer
			}
			a := e.post(s.sign(t))
			if a.status != http.StatusBadRequest || a.Error != "invalid_authorization_details" {
				t.Fatalf("got %d %s %q, want 400 invalid_authorization_details", a.status, a.Error, a.Description)
			}
			if !strings.Contains(a.Description, tc.want) {
				t.Errorf("error_description %q does not say %q", a.Description, tc.want)
			}
			for _, n := range []string{fnrConsent, "15058012359"} {
				if strings.Contains(a.Description, n) {
					t.Errorf("error_description shows the identity number: %q", a.Description)
				}
			}
		})
	}
}

// TestConsentToken: a known consent gives a token whose
// authorization_details carry id, from, to, consented, validTo and
// consentRights as Altinn documents them, after the system user's element
// when both are asked for.
func TestConsentToken(t *testing.T) {
	e := newEnv(t, withConsents)
	s := e.x5cGrant()
	s.claims["authorization_details"] = []any{
		map[string]any{"type": "urn:altinn:systemuser", "systemuser_org": sysOrg(orgSysUser)},
		consentDetail(consentPerson, fromPerson),
	}
	_, claims := e.mustIssue(s.sign(t))
	ad, _ := claims["authorization_details"].([]any)
	if len(ad) != 2 {
		t.Fatalf("authorization_details = %v, want two elements", claims["authorization_details"])
	}
	if d := ad[0].(map[string]any); d["type"] != "urn:altinn:systemuser" {
		t.Errorf("first element = %v, want the system user's", d)
	}
	d := ad[1].(map[string]any)
	to, _ := d["to"].(map[string]any)
	if d["type"] != "urn:altinn:consent" || d["id"] != consentPerson || d["from"] != fromPerson ||
		to["authority"] != "iso6523-actorid-upis" || to["ID"] != "0192:"+orgA {
		t.Errorf("consent element = %v", d)
	}
	if d["consented"] != "2026-03-02T09:00:00+00:00" || d["validTo"] != "2026-03-03T10:00:00+00:00" {
		t.Errorf("consented %v, validTo %v", d["consented"], d["validTo"])
	}
	rights, _ := d["consentRights"].([]any)
	if len(rights) != 1 {
		t.Fatalf("consentRights = %v", d["consentRights"])
	}
	r := rights[0].(map[string]any)
	res := r["resource"].([]any)[0].(map[string]any)
	if r["action"].([]any)[0] != "consent" || res["type"] != "urn:altinn:resource" || res["value"] != "standard-samtykke-for-dele-data" ||
		r["metaData"].(map[string]any)["inntektsaar"] != "2028" {
		t.Errorf("consentRights = %v", rights)
	}

	// Given to the organisation that delegated: with consumer_org.
	s = e.x5cGrant()
	s.claims["consumer_org"] = orgDelegate
	s.claims["authorization_details"] = []any{consentDetail(consentDelegated, fromPerson)}
	_, claims = e.mustIssue(s.sign(t))
	d = claims["authorization_details"].([]any)[0].(map[string]any)
	if d["to"].(map[string]any)["ID"] != "0192:"+orgDelegate || d["validTo"] != "2027-03-02T10:00:00+00:00" {
		t.Errorf("delegated consent element = %v", d)
	}
	if len(d["consentRights"].([]any)) != 1 {
		t.Errorf("default consentRights = %v", d["consentRights"])
	}
}
