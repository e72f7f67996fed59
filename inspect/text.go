package inspect

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/textsafe"
)

// The order claims and header fields are shown in; others follow sorted.
var (
	headerOrder = []string{"alg", "typ", "kid", "x5c", "x5t", "x5t#S256", "jku", "x5u"}
	claimOrder  = []string{"iss", "client_id", "aud", "scope", "consumer", "supplier", "resource",
		"consumer_org", "iss_onbehalfof", "pid", "authorization_details", "client_amr", "token_type",
		"delegation_source", "iat", "nbf", "exp", "jti"}
)

func ordered(m map[string]any, first []string) []string {
	rank := func(k string) int {
		if i := slices.Index(first, k); i >= 0 {
			return i
		}
		return len(first)
	}
	keys := slices.Sorted(maps.Keys(m))
	slices.SortStableFunc(keys, func(a, b string) int { return rank(a) - rank(b) })
	return keys
}

// printable returns s for a terminal by textsafe's one rule (control and
// reordering characters escaped), cut at maxShown runes: far above any real
// claim, yet a hostile token cannot flood the terminal.
func printable(s string) string { return textsafe.EscapeN(s, maxShown) }

const maxShown = 4096

// value writes a JSON value in one line: strings as they are, others as JSON.
func value(v any) string {
	if s, ok := v.(string); ok {
		return printable(s)
	}
	b, _ := json.Marshal(v) // decoded JSON: cannot fail
	return printable(string(b))
}

// WriteText writes the report for people, as mp-hsm inspect prints it, every value from the JWT printable.
func (r *Report) WriteText(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "%s\n", r.Description)
	fmt.Fprintf(w, "header\n")
	for _, k := range ordered(r.Header, headerOrder) {
		v := value(r.Header[k])
		if arr, ok := r.Header[k].([]any); ok && k == "x5c" {
			v = fmt.Sprintf("%d certificate(s), below", len(arr))
		}
		fmt.Fprintf(w, "  %s\t%s\n", printable(k), v)
	}
	fmt.Fprintf(w, "claims\n")
	for _, k := range ordered(r.Claims, claimOrder) {
		v := value(r.Claims[k])
		if t, ok := r.Times[k]; ok {
			v = t.text()
		} else if k == "authorization_details" && len(r.Details) > 0 {
			v = fmt.Sprintf("%d element(s), below", len(r.Details))
		} else if id, org := orgClaim(r.Claims[k]); id != "" {
			v = printable(id)
			if org != "" {
				v += " (organisation number " + printable(org) + ")"
			}
		}
		fmt.Fprintf(w, "  %s\t%s\n", printable(k), v)
	}
	if r.Lifetime != nil {
		fmt.Fprintf(w, "  (exp - iat)\t%d s\n", *r.Lifetime)
	}
	writeDetailsText(w, r.Details)
	for _, c := range r.Certificates {
		writeCertText(w, c)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem\t%s\n", printable(p))
	}
	if r.Signature == 0 {
		fmt.Fprintf(w, "signature\tnone (unsigned JWT)\n")
	} else {
		fmt.Fprintf(w, "signature\t%d bytes, NOT verified\n", r.Signature)
	}
	return w.Flush()
}

// row writes one indented line of a section, none for an empty value.
func row(w io.Writer, name, v string) {
	if v != "" {
		fmt.Fprintf(w, "  %s\t%s\n", name, v)
	}
}

func (t *Time) text() string {
	if t == nil {
		return ""
	}
	return t.Time + "  (" + t.Relative + ")"
}

func writeCertText(w io.Writer, c Certificate) {
	role := "leaf"
	if c.Index > 0 {
		role = "issuer"
	}
	fmt.Fprintf(w, "certificate %d (x5c, %s)\n", c.Index, role)
	if c.Error != "" {
		row(w, "error", c.Error)
		return
	}
	org, env := c.OrgNumber, c.Environment
	if env != "" {
		env += " (from the issuing CA)"
	}
	if c.Index == 0 && org == "" {
		org = "none found"
	}
	if c.Index == 0 && env == "" {
		env = "unknown: not a known Buypass or Commfides CA"
	}
	fmt.Fprintf(w, "  subject\t%s\n", printable(c.Subject))
	row(w, "org number", org)
	fmt.Fprintf(w, "  issuer\t%s\n", printable(c.Issuer))
	row(w, "environment", env)
	row(w, "valid", fmt.Sprintf("%s to %s  (%s)", c.NotBefore, c.NotAfter, c.Validity))
	row(w, "key usage", strings.Join(c.KeyUsage, ", "))
	row(w, "public key", c.PublicKey)
	fmt.Fprintf(w, "  serial\t%s\n", c.Serial)
	row(w, "sha256", c.SHA256)
}

// Relative says in words how t relates to now for the claim or field
// name: "in 45 s", "3 min ago", "expired 2 days ago" (exp, not_after), with
// a warning for a future iat, nbf or not_before.
func Relative(name string, t, now time.Time) string {
	d, expiry := t.Sub(now), name == "exp" || name == "not_after"
	h := Duration(d)
	switch {
	case d.Abs() < time.Second && expiry:
		return "expires now"
	case d.Abs() < time.Second:
		return "now"
	case d > 0 && name == "iat":
		return "in " + h + " (issued in the future: clock skew?)"
	case d > 0 && (name == "nbf" || name == "not_before"):
		return "in " + h + " (not yet valid)"
	case d > 0:
		return "in " + h
	case expiry:
		return "expired " + h + " ago"
	}
	return h + " ago"
}

// Duration writes |d|, rounded to the second, in the largest whole unit
// that suits it: "45 s", "3 min", "47 h" (up to two days), "300 days".
func Duration(d time.Duration) string {
	s := int64(d.Abs().Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%d s", s)
	case s < 3600:
		return fmt.Sprintf("%d min", s/60)
	case s < 48*3600:
		return fmt.Sprintf("%d h", s/3600)
	}
	return fmt.Sprintf("%d days", s/86400)
}

// KeyUsageNames returns the RFC 5280 names of the bits set in u, in bit order; nil when none is set.
func KeyUsageNames(u x509.KeyUsage) []string {
	var out []string
	for bit, name := range []string{"digitalSignature", "nonRepudiation", "keyEncipherment",
		"dataEncipherment", "keyAgreement", "keyCertSign", "cRLSign"} { // x509.KeyUsage's bits, in order
		if u&(x509.KeyUsage(1)<<bit) != 0 {
			out = append(out, name)
		}
	}
	return out
}
