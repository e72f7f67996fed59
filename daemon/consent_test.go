package daemon_test

import (
	"encoding/json"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/grant"
)

// The consent the test emulator knows: given by a person to testOrg.
const (
	testConsentFNR  = "01019012480"
	testConsentID   = "77ed8698-e619-4066-9eb4-5c1eb3f165a1"
	testConsentFrom = grant.PersonURNPrefix + testConsentFNR
)

func consentDetails(id, from string) string {
	return `[{"type":"urn:altinn:consent","id":"` + id + `","from":"` + from + `"}]`
}

// TestConsentThroughDaemon: a caller gets a consent token through the
// daemon only for a client whose authorization-types list the type; the
// details are checked as the library checks them before anything is
// signed; two consents are two cache keys; the audit line records the
// type and the consent id with from masked; and no identity number reaches
// the log or the audit trail.
func TestConsentThroughDaemon(t *testing.T) {
	t.Parallel()
	uid := strconv.Itoa(os.Getuid())
	var audit lockedBuffer
	f := newFixture(t, options{modify: func(c *daemon.Config) {
		c.ClientSecret = ""
		c.Grant.ClientID = ""
		c.Audit = daemon.NewAuditLog(&audit)
		c.Clients = []daemon.Client{
			{Name: "bank", ClientID: testClient, Users: []string{uid}, AuthorizationTypes: []string{grant.ConsentType}},
			{Name: "plain", ClientID: testClient, Users: []string{uid}},
		}
	}})
	form := func(client, details string) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}, "scope": {"test:read"}, "client_id": {client}}
		if details != "" {
			v.Set("authorization_details", details)
		}
		return v
	}
	a := f.post(form("bank", consentDetails(testConsentID, testConsentFrom)))
	wantToken(t, a)
	claims := f.claims(a.AccessToken)
	ad, _ := claims["authorization_details"].([]any)
	if len(ad) != 1 {
		t.Fatalf("authorization_details = %v", claims["authorization_details"])
	}
	d := ad[0].(map[string]any)
	if d["id"] != testConsentID || d["from"] != testConsentFrom || d["to"].(map[string]any)["ID"] != "0192:"+testOrg || d["validTo"] == nil {
		t.Errorf("consent element = %v", d)
	}
	if b := f.post(form("bank", consentDetails(testConsentID, testConsentFrom))); b.AccessToken != a.AccessToken {
		t.Error("the same consent again was not served from the cache")
	}
	if b := f.post(form("bank", "")); b.AccessToken == a.AccessToken {
		t.Error("a request without the consent got the consent token")
	}
	before := f.emu.Stats().TokenRequests

	badFNR := "01019012481"
	for _, tc := range []struct {
		what, client, details string
		status                int
		code, desc            string
	}{
		{"a client without authorization-types", "plain", consentDetails(testConsentID, testConsentFrom), 400, "invalid_authorization_details", "not allowed for the client 'plain'"},
		{"a type not listed", "bank", `[{"type":"urn:example:other"}]`, 400, "invalid_authorization_details", "'urn:example:other' is not allowed"},
		{"one listed, one not", "bank", `[{"type":"urn:altinn:consent","id":"` + testConsentID + `","from":"` + testConsentFrom + `"},{"type":"urn:altinn:systemuser"}]`, 400, "invalid_authorization_details", "urn:altinn:systemuser"},
		{"not JSON", "bank", `[{"type":`, 400, "invalid_authorization_details", "JSON array"},
		{"no type", "bank", `[{"id":"x"}]`, 400, "invalid_authorization_details", "'type' must be"},
		{"bad fnr", "bank", consentDetails(testConsentID, grant.PersonURNPrefix+badFNR), 400, "invalid_authorization_details", "national identity number"},
		{"not a UUID", "bank", consentDetails("1234", testConsentFrom), 400, "invalid_authorization_details", "UUID"},
	} {
		b := f.post(form(tc.client, tc.details))
		if b.Status != tc.status || b.Error != tc.code || !strings.Contains(b.Description, tc.desc) {
			t.Errorf("%s: %s; want %d %s %q", tc.what, describe(b), tc.status, tc.code, tc.desc)
		}
		if strings.Contains(b.Description, badFNR) {
			t.Errorf("%s: the answer shows the identity number: %s", tc.what, b.Description)
		}
	}
	if n := f.emu.Stats().TokenRequests; n != before {
		t.Errorf("refused requests reached Maskinporten (%d requests, want %d)", n, before)
	}
	twice := form("bank", consentDetails(testConsentID, testConsentFrom))
	twice.Add("authorization_details", `[{"type":"urn:altinn:consent"}]`)
	wantError(t, f.post(twice), 400, "invalid_request")

	// Maskinporten's refusal of a consent (here: from another person) is
	// the caller's to fix: 400 with Maskinporten's code, not 502.
	other := grant.PersonURNPrefix + "15058012359"
	wantError(t, f.post(form("bank", consentDetails(testConsentID, other))), 400, "invalid_authorization_details")

	// The audit trail: the type and consent id, from masked.
	var issued map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(audit.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		if m["outcome"] == "issued" && m["consent_id"] != nil {
			issued = m
			break
		}
	}
	if issued == nil {
		t.Fatalf("no audit line of the issued consent token:\n%s", audit.String())
	}
	if got, _ := json.Marshal([]any{issued["authorization_types"], issued["consent_id"], issued["consent_from"]}); string(got) !=
		`[["urn:altinn:consent"],["`+testConsentID+`"],["urn:altinn:person:identifier-no:010190*****"]]` {
		t.Errorf("audit line: authorization_types, consent_id, consent_from = %s", got)
	}
	for what, s := range map[string]string{"audit": audit.String(), "log": f.logs.String()} {
		for _, n := range []string{testConsentFNR, badFNR, "15058012359"} {
			if strings.Contains(s, n) {
				t.Errorf("the %s holds the identity number %s:\n%s", what, n, s)
			}
		}
	}

	// RFC 8414 metadata lists the types some client allows.
	status, body := f.get("/.well-known/oauth-authorization-server")
	var md struct {
		Types []string `json:"authorization_details_types_supported"`
	}
	if err := json.Unmarshal([]byte(body), &md); err != nil || status != 200 || len(md.Types) != 1 || md.Types[0] != grant.ConsentType {
		t.Errorf("metadata %d: authorization_details_types_supported = %v (%v)", status, md.Types, err)
	}
}

// TestConsentFailClosed: a daemon without clients, or a client whose
// authorization-types are empty, allows no authorization_details; a list
// with no entry is refused at start.
func TestConsentFailClosed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	a := f.post(scopeForm("test:read", "authorization_details", consentDetails(testConsentID, testConsentFrom)))
	wantError(t, a, 400, "invalid_authorization_details")
	if !strings.Contains(a.Description, "allows none") {
		t.Errorf("description %q", a.Description)
	}
	if _, body := f.get("/.well-known/oauth-authorization-server"); !strings.Contains(body, `"authorization_details_types_supported":[]`) {
		t.Errorf("metadata of a daemon that allows no types: %s", body)
	}
	err := daemon.CheckClients([]daemon.Client{{Name: "x", Users: []string{"0"}, AuthorizationTypes: []string{" , "}}})
	if err == nil || !strings.Contains(err.Error(), "authorization-types") {
		t.Errorf("CheckClients with an empty authorization-types entry = %v", err)
	}
}
