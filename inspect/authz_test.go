package inspect_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/inspect"
)

const consentTokenClaims = `{"iss":"https://test.maskinporten.no/","client_id":"c","scope":"altinn:consentrequests.read",
"token_type":"Bearer","consumer":{"authority":"iso6523-actorid-upis","ID":"0192:313876144"},
"iat":1768473280,"exp":1768473400,"jti":"j",
"authorization_details":[{"type":"urn:altinn:consent","id":"ecbff842-199b-45c9-8b58-80ed4d813660",
 "from":"urn:altinn:person:identifier-no:01019012480",
 "to":{"authority":"iso6523-actorid-upis","ID":"0192:313876144"},
 "consented":"2026-01-15T10:34:39.676924+00:00","validTo":"2026-01-20T10:34:34.836+00:00",
 "consentRights":[{"action":["consent"],"resource":[{"type":"urn:altinn:resource","value":"standard-samtykke-for-dele-data"}],"metaData":{"inntektsaar":"2028"}}]}]}`

// TestConsentDetails: a consent token's authorization_details are shown
// readably (from, to, validity, rights), with the identity number masked
// in the text, the JSON and the claims unless ShowPID asks.
func TestConsentDetails(t *testing.T) {
	const fnr = "01019012480"
	input := b64url(`{"alg":"RS256","kid":"k"}`) + "." + b64url(consentTokenClaims) + ".c2ln"
	now := time.Date(2026, 1, 16, 10, 34, 34, 0, time.UTC)
	rep, err := inspect.Inspect(input, inspect.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Details) != 1 {
		t.Fatalf("Details = %+v", rep.Details)
	}
	d := rep.Details[0]
	if d.Type != "urn:altinn:consent" || d.ConsentID != "ecbff842-199b-45c9-8b58-80ed4d813660" ||
		d.From != "urn:altinn:person:identifier-no:010190*****" || d.To != "0192:313876144" ||
		d.ValidTo == nil || d.ValidTo.Time != "2026-01-20T10:34:34Z" || d.ValidTo.Relative != "in 4 days" ||
		d.Consented == nil || d.Consented.Relative != "23 h ago" ||
		len(d.Rights) != 1 || d.Rights[0] != "consent on standard-samtykke-for-dele-data (inntektsaar=2028)" {
		t.Errorf("detail = %+v (valid to %+v, consented %+v)", d, d.ValidTo, d.Consented)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(rep)
	for what, s := range map[string]string{"text": text.String(), "json": string(js)} {
		if strings.Contains(s, fnr) {
			t.Errorf("%s shows the identity number:\n%s", what, s)
		}
	}
	for _, want := range []string{"consent id", "from", "authorization_details  1 element(s), below", "authorization detail 1   urn:altinn:consent",
		"valid to", "right", "standard-samtykke-for-dele-data (inntektsaar=2028)"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}

	rep, _ = inspect.Inspect(input, inspect.Options{Now: now, ShowPID: true})
	js, _ = json.Marshal(rep)
	if rep.Details[0].From != "urn:altinn:person:identifier-no:"+fnr || !strings.Contains(string(js), fnr) {
		t.Errorf("ShowPID: from %q, want it in full", rep.Details[0].From)
	}
}
