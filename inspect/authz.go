package inspect

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
)

// Detail sums up one element of an authorization_details claim (RFC 9396),
// such as an Altinn consent or system user; a person's number in From is
// masked unless Options.ShowPID.
type Detail struct {
	Type          string   `json:"type"`
	ConsentID     string   `json:"id,omitempty"`             // a consent's id
	From          string   `json:"from,omitempty"`           // who gave the consent (a URN)
	To            string   `json:"to,omitempty"`             // ISO 6523 ID of whom it was given to, "0192:<orgnr>" (tokens)
	Consented     *Time    `json:"consented,omitempty"`      // when it was given (tokens)
	ValidTo       *Time    `json:"valid_to,omitempty"`       // when it runs out (tokens)
	Rights        []string `json:"rights,omitempty"`         // consentRights in words (tokens)
	SystemUserOrg string   `json:"systemuser_org,omitempty"` // ISO 6523 ID of a system user's organisation
	Problems      []string `json:"problems,omitempty"`       // what could not be read
}

// describeDetails sums up each element of the authorization_details claim v
// in r.Details, and returns the claim to show (from masked unless showPID).
func (r *Report) describeDetails(v any, showPID bool, now time.Time) any {
	arr, ok := v.([]any)
	if !ok {
		r.Problems = append(r.Problems, "claim authorization_details: not a JSON array")
		return v
	}
	shown := make([]any, len(arr))
	for i, e := range arr {
		m, ok := e.(map[string]any)
		if !ok {
			shown[i] = e
			r.Details = append(r.Details, Detail{Problems: []string{fmt.Sprintf("element %d is not an object", i+1)}})
			continue
		}
		if from, ok := m["from"].(string); ok && !showPID {
			m = maps.Clone(m)
			m["from"] = grant.MaskParty(from)
		}
		shown[i] = m
		d := Detail{Type: str(m, "type"), ConsentID: str(m, "id"), From: str(m, "from")}
		d.To, _ = orgClaim(m["to"])
		d.SystemUserOrg, _ = orgClaim(m["systemuser_org"])
		at := func(name, rel string) *Time {
			s, ok := m[name].(string)
			t, err := time.Parse(time.RFC3339Nano, s)
			if ok && err != nil {
				d.Problems = append(d.Problems, name+" is not an RFC 3339 time")
			}
			if !ok || err != nil {
				return nil
			}
			return &Time{Unix: t.Unix(), Time: t.UTC().Format(time.RFC3339), Relative: Relative(rel, t, now)}
		}
		d.Consented, d.ValidTo = at("consented", "consented"), at("validTo", "exp") // left to right, as are problems; "expired ... ago" once past
		d.Rights = each(m["consentRights"], rightInWords)
		r.Details = append(r.Details, d)
	}
	return shown
}

// each applies f to each element of v, a JSON array; nil for anything else.
func each(v any, f func(any) string) []string {
	a, _ := v.([]any)
	var out []string
	for _, x := range a {
		out = append(out, f(x))
	}
	return out
}

// rightInWords writes a consentRights element as "consent on
// standard-samtykke-for-dele-data (inntektsaar=2028)".
func rightInWords(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return value(v)
	}
	actions := each(m["action"], value)
	resources := each(m["resource"], func(r any) string {
		if rm, ok := r.(map[string]any); ok && rm["value"] != nil {
			return value(rm["value"])
		}
		return value(r)
	})
	var meta []string
	md, ok := m["metaData"].(map[string]any)
	if !ok {
		md, _ = m["metadata"].(map[string]any)
	}
	for _, k := range slices.Sorted(maps.Keys(md)) {
		meta = append(meta, printable(k)+"="+value(md[k]))
	}
	s := strings.Join(actions, ", ") + " on " + strings.Join(resources, ", ")
	if len(meta) > 0 {
		s += " (" + strings.Join(meta, ", ") + ")"
	}
	return s
}

// writeDetailsText writes each detail as a section of the text report.
func writeDetailsText(w io.Writer, details []Detail) {
	for i, d := range details {
		fmt.Fprintf(w, "authorization detail %d\t%s\n", i+1, printable(d.Type))
		row(w, "consent id", printable(d.ConsentID))
		row(w, "from", printable(d.From))
		if d.To != "" {
			row(w, "to", printable(d.To)+" (organisation number "+printable(orgNumber(d.To))+")")
		}
		row(w, "consented", d.Consented.text())
		row(w, "valid to", d.ValidTo.text())
		for _, r := range d.Rights {
			row(w, "right", r)
		}
		row(w, "system user of", printable(d.SystemUserOrg))
		for _, p := range d.Problems {
			row(w, "problem", printable(p))
		}
	}
}
