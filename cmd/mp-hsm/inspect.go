package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/mp-hsm/mp-hsm/grant"
)

func inspectCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "decode a grant or an access token (decodes only: verifies nothing)",
		UsageText: "mp-hsm token ... | mp-hsm inspect [--output text|json] [--now TIME] [JWT|-]",
		ArgsUsage: "[JWT|-]",
		Description: "Decodes a JWT, such as a grant from 'mp-hsm grant' or an access token from 'mp-hsm token',\n" +
			"read from the argument or, with - or no argument, from stdin: its header, its claims, the\n" +
			"times iat, nbf and exp as dates with how long ago or how soon, the certificates in x5c\n" +
			"(subject, organisation number, issuer, validity, environment) and, for an access token,\n" +
			"client_id, scope and consumer. stdin may also hold 'Authorization: Bearer <token>' or the\n" +
			"JSON of 'mp-hsm token --output json'. Prefer stdin: an argument is visible to other users.\n\n" +
			"It only decodes: neither the signature nor the claims are verified, so what it shows may\n" +
			"be forged. Nothing is sent anywhere. --output json prints a stable JSON object.",
		Flags: []cli.Flag{
			&cli.StringFlag{Category: catOut, Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "`FORMAT`: text or json", EnvVars: []string{"MP_HSM_OUTPUT"}},
			&cli.StringFlag{Category: catOut, Name: "now", Usage: "judge the times against `TIME` (RFC 3339) instead of the clock"},
			&cli.BoolFlag{Category: catOut, Name: "show-pid", Usage: "show a pid claim in full (default: only its first six digits, as in mp-hsm's logs)"},
		},
		Action: func(c *cli.Context) error { return e.inspect(c) },
	}
}

// maxInspectInput bounds what inspect reads from stdin.
const maxInspectInput = 1 << 20

func (e *env) inspect(c *cli.Context) error {
	out := c.String("output")
	if out == "token" { // the shared MP_HSM_OUTPUT default of 'token' means text here
		out = "text"
	}
	if out != "text" && out != "json" {
		return usagef("--output %q: use text or json", out)
	}
	now := time.Now()
	if s := c.String("now"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return usagef("--now %q: want an RFC 3339 time such as 2025-01-31T12:00:00Z", s)
		}
		now = t
	}
	input, err := e.inspectInput(c)
	if err != nil {
		return err
	}
	d, err := inspectDecode(input)
	if err != nil {
		return usageErr(err)
	}
	if pid, ok := d.claims["pid"].(string); ok && !c.Bool("show-pid") {
		d.claims["pid"] = grant.MaskPID(pid)
	}
	rep := inspectJWT(d, now)
	if !c.Bool("quiet") {
		fmt.Fprintln(e.stderr, "mp-hsm inspect: decoded only; nothing is verified (not the signature, the issuer nor the times)")
	}
	if out == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.writeText(e.stdout)
}

// inspectInput returns the JWT text from the argument or stdin.
func (e *env) inspectInput(c *cli.Context) (string, error) {
	switch c.NArg() {
	case 0:
	case 1:
		if a := c.Args().First(); a != "-" {
			return a, nil
		}
	default:
		return "", usagef("inspect takes one JWT (or - for stdin), not %d arguments", c.NArg())
	}
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintln(e.stderr, "mp-hsm inspect: paste the JWT, then press Ctrl-D")
	}
	data, err := io.ReadAll(io.LimitReader(e.stdin, maxInspectInput+1))
	if err != nil {
		return "", fmt.Errorf("reading stdin: %w", err)
	}
	if len(data) > maxInspectInput {
		return "", usagef("the input on stdin is larger than 1 MiB: not a JWT")
	}
	return string(data), nil
}

// inspectedJWT is a JWT taken apart, nothing verified.
type inspectedJWT struct {
	header    map[string]any
	claims    map[string]any
	signature int // length of the signature in bytes
}

// inspectDecode takes a compact JWS apart: three base64url parts, the first two
// JSON objects. input may be surrounded by white space, may start with
// "Authorization:" and "Bearer", or be a token response (a JSON object with
// access_token). Errors say precisely what is wrong without quoting the
// input, which may be a live token. inspectDecode never panics.
func inspectDecode(input string) (*inspectedJWT, error) {
	s, err := inspectExtract(input)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(s, ".")
	switch n := len(parts); {
	case n == 5:
		return nil, errors.New("not a signed JWT: 5 dot-separated parts make an encrypted JWT (JWE), which cannot be decoded without its key")
	case n == 1:
		return nil, errors.New("not a JWT: want three base64url parts separated by dots (header.claims.signature), found no dot")
	case n != 3:
		return nil, fmt.Errorf("not a JWT: want three base64url parts separated by dots (header.claims.signature), found %d parts", n)
	}
	d := &inspectedJWT{}
	if d.header, err = inspectPart(parts[0], "part 1 (the header)"); err != nil {
		return nil, err
	}
	if d.claims, err = inspectPart(parts[1], "part 2 (the claims)"); err != nil {
		return nil, err
	}
	sig, err := inspectBase64URL(parts[2])
	if err != nil {
		return nil, fmt.Errorf("part 3 (the signature) is not base64url: %w", err)
	}
	d.signature = len(sig)
	return d, nil
}

// inspectExtract trims input and removes an "Authorization: Bearer" prefix, or
// takes access_token out of a token response.
func inspectExtract(input string) (string, error) {
	s := strings.TrimSpace(input)
	if s == "" {
		return "", errors.New("no JWT given: pass it as the argument, or on stdin (mp-hsm inspect -)")
	}
	if rest, ok := inspectCutPrefix(s, "authorization:"); ok {
		s = strings.TrimSpace(rest)
	}
	if rest, ok := inspectCutPrefix(s, "bearer "); ok {
		s = strings.TrimSpace(rest)
	}
	if strings.HasPrefix(s, "{") {
		var resp struct {
			AccessToken *string `json:"access_token"`
		}
		if err := json.Unmarshal([]byte(s), &resp); err != nil {
			return "", fmt.Errorf("the input starts with '{' but is not a token response (JSON with access_token): %s", inspectJSONProblem(err))
		}
		if resp.AccessToken == nil {
			return "", errors.New("the input is JSON without access_token: give the JWT itself, or a token response")
		}
		s = strings.TrimSpace(*resp.AccessToken)
		if s == "" {
			return "", errors.New("the token response's access_token is empty")
		}
	}
	if i := strings.IndexFunc(s, unicode.IsSpace); i >= 0 {
		return "", fmt.Errorf("not a JWT: it holds white space at byte %d; a JWT is one word of base64url parts separated by dots", i)
	}
	return s, nil
}

func inspectCutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// inspectBase64URL decodes base64url without padding, tolerating padding.
func inspectBase64URL(part string) ([]byte, error) {
	if i := strings.IndexAny(part, "+/"); i >= 0 {
		return nil, fmt.Errorf("%q at byte %d is standard base64, not base64url (which has '-' and '_')", part[i], i)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(part, "="))
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			if int(ce) < len(part) && part[ce] >= 0x21 && part[ce] < 0x7f {
				return nil, fmt.Errorf("character %q at byte %d is not base64url", part[ce], int64(ce))
			}
			if int(ce) >= len(strings.TrimRight(part, "=")) {
				return nil, errors.New("its length is impossible for base64url (cut short?)")
			}
			return nil, fmt.Errorf("byte %d is not base64url", int64(ce))
		}
		return nil, err
	}
	return b, nil
}

// inspectPart decodes one base64url part holding a JSON object.
func inspectPart(part, name string) (map[string]any, error) {
	if part == "" {
		return nil, fmt.Errorf("%s is empty", name)
	}
	raw, err := inspectBase64URL(part)
	if err != nil {
		return nil, fmt.Errorf("%s is not base64url: %w", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%s is not JSON: %s", name, inspectJSONProblem(err))
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s is JSON but not an object", name)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s has more after its JSON object", name)
	}
	return m, nil
}

// inspectJSONProblem describes a JSON decoding error without quoting the input.
func inspectJSONProblem(err error) string {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%s (at byte %d)", strings.TrimPrefix(se.Error(), "json: "), se.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "it ends too early"
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s where %s was expected", te.Value, te.Type)
	}
	return "invalid JSON"
}

// Kinds of JWT inspect tells apart, by their claims.
const (
	inspectKindGrant  = "grant"
	inspectKindAccess = "access_token"
	inspectKindAltinn = "altinn_token"
	inspectKindJWT    = "jwt"
)

var inspectKindNames = map[string]string{
	inspectKindGrant:  "Maskinporten grant (JWT bearer grant, RFC 7523)",
	inspectKindAccess: "Maskinporten access token",
	inspectKindAltinn: "Altinn token",
	inspectKindJWT:    "JWT",
}

// inspectReport is what inspect prints; its JSON form is part of the CLI's
// contract, so fields are only ever added.
type inspectReport struct {
	Kind         string                 `json:"kind"`        // grant, access_token, altinn_token or jwt
	Description  string                 `json:"description"` // the kind in words
	Verified     bool                   `json:"verified"`    // always false: inspect only decodes
	Now          string                 `json:"now"`         // the time the relative words count from
	Header       map[string]any         `json:"header"`
	Claims       map[string]any         `json:"claims"`
	Times        map[string]inspectTime `json:"times"` // iat, nbf, exp, when present
	Lifetime     *int64                 `json:"lifetime_seconds,omitempty"`
	Expired      *bool                  `json:"expired,omitempty"`
	KeyID        string                 `json:"kid,omitempty"`
	Algorithm    string                 `json:"alg,omitempty"`
	Certificates []inspectCert          `json:"certificates"`
	AccessToken  *inspectAccess         `json:"access_token,omitempty"`
	Signature    int                    `json:"signature_bytes"`
	Problems     []string               `json:"problems,omitempty"` // what could not be decoded
}

// inspectTime is a NumericDate claim.
type inspectTime struct {
	Unix     int64  `json:"unix"`
	Time     string `json:"time"`     // RFC 3339, UTC
	Relative string `json:"relative"` // "in 45 s", "expired 3 min ago"
}

// inspectCert is a certificate from x5c.
type inspectCert struct {
	Index       int      `json:"index"`
	Subject     string   `json:"subject,omitempty"`
	Issuer      string   `json:"issuer,omitempty"`
	IssuerCN    string   `json:"issuer_cn,omitempty"`
	Serial      string   `json:"serial,omitempty"`
	OrgNumber   string   `json:"org_number,omitempty"`
	Environment string   `json:"environment,omitempty"` // test or prod, from the issuing CA
	NotBefore   string   `json:"not_before,omitempty"`
	NotAfter    string   `json:"not_after,omitempty"`
	Validity    string   `json:"validity,omitempty"` // "expires in 300 days", "expired 2 days ago", ...
	KeyUsage    []string `json:"key_usage,omitempty"`
	PublicKey   string   `json:"public_key,omitempty"`
	SHA256      string   `json:"sha256,omitempty"`
	Error       string   `json:"error,omitempty"`
}

// inspectAccess sums up an access token.
type inspectAccess struct {
	ClientID    string `json:"client_id"`
	Scope       string `json:"scope"`
	Consumer    string `json:"consumer,omitempty"`     // ISO 6523 ID, "0192:<orgnr>"
	ConsumerOrg string `json:"consumer_org,omitempty"` // the organisation number in it
	Supplier    string `json:"supplier,omitempty"`
	ClientAMR   string `json:"client_amr,omitempty"`
}

// inspectJWT describes d, counting relative times from now.
func inspectJWT(d *inspectedJWT, now time.Time) *inspectReport {
	r := &inspectReport{
		Header: d.header, Claims: d.claims, Times: map[string]inspectTime{},
		Now: now.UTC().Format(time.RFC3339), Certificates: []inspectCert{}, Signature: d.signature,
	}
	r.Kind = inspectKind(d)
	r.Description = inspectKindNames[r.Kind]
	r.KeyID, _ = d.header["kid"].(string)
	r.Algorithm, _ = d.header["alg"].(string)
	var unix = map[string]int64{}
	for _, name := range []string{"iat", "nbf", "exp"} {
		v, ok := d.claims[name]
		if !ok {
			continue
		}
		sec, err := inspectNumericDate(v)
		if err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("claim %s: %v", name, err))
			continue
		}
		unix[name] = sec
		t := time.Unix(sec, 0)
		r.Times[name] = inspectTime{Unix: sec, Time: t.UTC().Format(time.RFC3339), Relative: inspectRelative(name, t, now)}
	}
	if exp, ok := unix["exp"]; ok {
		expired := !time.Unix(exp, 0).After(now)
		r.Expired = &expired
		if iat, ok := unix["iat"]; ok {
			l := exp - iat
			r.Lifetime = &l
		}
	}
	if v, ok := d.header["x5c"]; ok {
		certs, problem := inspectX5C(v, now)
		r.Certificates = certs
		if problem != "" {
			r.Problems = append(r.Problems, problem)
		}
	}
	if r.Kind == inspectKindAccess {
		a := &inspectAccess{}
		a.ClientID, _ = d.claims["client_id"].(string)
		a.Scope, _ = d.claims["scope"].(string)
		a.ClientAMR, _ = d.claims["client_amr"].(string)
		a.Consumer, a.ConsumerOrg = inspectOrgClaim(d.claims["consumer"])
		a.Supplier, _ = inspectOrgClaim(d.claims["supplier"])
		r.AccessToken = a
	}
	return r
}

// inspectKind tells a Maskinporten grant, access token or Altinn token by its
// claims.
func inspectKind(d *inspectedJWT) string {
	c := d.claims
	has := func(k string) bool { _, ok := c[k]; return ok }
	for k := range c {
		if strings.HasPrefix(k, "urn:altinn:") {
			return inspectKindAltinn
		}
	}
	switch {
	case has("client_id") || has("consumer") && has("token_type"):
		return inspectKindAccess
	case has("aud") && has("iss") && has("jti") && (has("scope") || has("authorization_details")) &&
		(d.header["x5c"] != nil || d.header["kid"] != nil):
		return inspectKindGrant
	}
	return inspectKindJWT
}

// NumericDates beyond year 9999 are not shown as dates.
const inspectMaxDate = 253402300799

// inspectNumericDate reads a NumericDate (seconds since the epoch; a fraction is
// cut off).
func inspectNumericDate(v any) (int64, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, errors.New("not a NumericDate (a number of seconds)")
	}
	if i, err := n.Int64(); err == nil {
		if i > inspectMaxDate || i < -inspectMaxDate {
			return 0, errors.New("out of range for a date")
		}
		return i, nil
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || f > inspectMaxDate || f < -inspectMaxDate {
		return 0, errors.New("out of range for a date")
	}
	return int64(f), nil
}

// inspectRelative says how t relates to now for the claim name.
func inspectRelative(name string, t, now time.Time) string {
	d := t.Sub(now)
	if d.Abs() < time.Second {
		switch name {
		case "exp", "not_after":
			return "expires now"
		}
		return "now"
	}
	h := inspectDuration(d)
	if d > 0 {
		switch name {
		case "iat":
			return "in " + h + " (issued in the future: clock skew?)"
		case "nbf", "not_before":
			return "in " + h + " (not yet valid)"
		}
		return "in " + h
	}
	switch name {
	case "exp", "not_after":
		return "expired " + h + " ago"
	}
	return h + " ago"
}

// inspectDuration writes |d| in the largest whole unit that suits it.
func inspectDuration(d time.Duration) string {
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

// inspectX5C parses the x5c header: an array of standard base64 DER
// certificates, leaf first.
func inspectX5C(v any, now time.Time) ([]inspectCert, string) {
	arr, ok := v.([]any)
	if !ok {
		return []inspectCert{}, "header x5c is not an array (Maskinporten answers MP-123)"
	}
	out := make([]inspectCert, 0, len(arr))
	for i, el := range arr {
		ic := inspectCert{Index: i}
		s, ok := el.(string)
		if !ok {
			ic.Error = "not a string"
			out = append(out, ic)
			continue
		}
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			ic.Error = "not standard base64 (x5c is not base64url)"
			out = append(out, ic)
			continue
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			ic.Error = "not a DER certificate: " + strings.TrimPrefix(err.Error(), "x509: ")
			out = append(out, ic)
			continue
		}
		out = append(out, inspectX5CCert(i, cert, now))
	}
	return out, ""
}

func inspectX5CCert(i int, cert *x509.Certificate, now time.Time) inspectCert {
	ic := inspectCert{
		Index:     i,
		Subject:   inspectDN(cert.Subject),
		Issuer:    inspectDN(cert.Issuer),
		IssuerCN:  cert.Issuer.CommonName,
		NotBefore: cert.NotBefore.UTC().Format(time.RFC3339),
		NotAfter:  cert.NotAfter.UTC().Format(time.RFC3339),
		KeyUsage:  keyUsageNames(cert.KeyUsage),
		PublicKey: inspectPublicKey(cert.PublicKey),
	}
	if cert.SerialNumber != nil {
		ic.Serial = hex.EncodeToString(cert.SerialNumber.Bytes())
	}
	sum := sha256.Sum256(cert.Raw)
	ic.SHA256 = hex.EncodeToString(sum[:])
	if o, ok := grant.CertificateOrgNumber(cert); ok {
		ic.OrgNumber = o
	}
	if env, err := grant.EnvironmentForCertificate(cert); err == nil {
		ic.Environment = env
	}
	switch {
	case now.Before(cert.NotBefore):
		ic.Validity = "not yet valid: " + inspectRelative("not_before", cert.NotBefore, now)
	case now.After(cert.NotAfter):
		ic.Validity = inspectRelative("not_after", cert.NotAfter, now)
	default:
		ic.Validity = "valid, expires " + inspectRelative("not_after", cert.NotAfter, now)
	}
	return ic
}

// inspectAttrNames are the short names of distinguished-name attributes;
// pkix.Name.String shows organizationIdentifier, which enterprise
// certificates carry, only as hex.
var inspectAttrNames = map[string]string{
	"2.5.4.3": "CN", "2.5.4.5": "SERIALNUMBER", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST",
	"2.5.4.9": "STREET", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.17": "postalCode",
	"2.5.4.97": "organizationIdentifier", "1.2.840.113549.1.9.1": "emailAddress",
}

// inspectDN writes a distinguished name as pkix.Name.String does (most
// specific first), with organizationIdentifier by name.
func inspectDN(n pkix.Name) string {
	parts := make([]string, 0, len(n.Names))
	for i := len(n.Names) - 1; i >= 0; i-- {
		a := n.Names[i]
		name, ok := inspectAttrNames[a.Type.String()]
		if !ok {
			name = a.Type.String()
		}
		v, isStr := a.Value.(string)
		if !isStr {
			v = fmt.Sprint(a.Value)
		}
		parts = append(parts, name+"="+v)
	}
	if len(parts) == 0 {
		return n.String()
	}
	return strings.Join(parts, ", ")
}

func inspectPublicKey(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return "unknown"
}

// inspectOrgClaim reads an ISO 6523 organisation claim such as consumer:
// {"authority":"iso6523-actorid-upis","ID":"0192:<orgnr>"}.
func inspectOrgClaim(v any) (id, orgnr string) {
	m, ok := v.(map[string]any)
	if !ok {
		return "", ""
	}
	id, _ = m["ID"].(string)
	if n, ok := strings.CutPrefix(id, "0192:"); ok {
		orgnr = n
	}
	return id, orgnr
}

// The order claims and header fields are shown in; others follow sorted.
var (
	inspectHeaderOrder = []string{"alg", "typ", "kid", "x5c", "x5t", "x5t#S256", "jku", "x5u"}
	inspectClaimOrder  = []string{"iss", "client_id", "aud", "scope", "consumer", "supplier", "resource",
		"consumer_org", "iss_onbehalfof", "pid", "authorization_details", "client_amr", "token_type",
		"delegation_source", "iat", "nbf", "exp", "jti"}
)

func inspectOrder(m map[string]any, first []string) []string {
	keys := make([]string, 0, len(m))
	for _, k := range first {
		if _, ok := m[k]; ok {
			keys = append(keys, k)
		}
	}
	var rest []string
	for k := range m {
		if !slices.Contains(first, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	return append(keys, rest...)
}

// inspectPrintable returns s as is when it is inspectPrintable UTF-8, and quoted
// otherwise, so that a token cannot send control sequences to a terminal.
func inspectPrintable(s string) string {
	if !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// inspectValue writes a JSON value in one line: strings as they are, others as
// compact JSON.
func inspectValue(v any) string {
	if s, ok := v.(string); ok {
		return inspectPrintable(s)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "?"
	}
	return inspectPrintable(string(b))
}

// writeText prints the report for people.
func (r *inspectReport) writeText(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "%s\n", r.Description)
	fmt.Fprintf(w, "header\n")
	for _, k := range inspectOrder(r.Header, inspectHeaderOrder) {
		v := inspectValue(r.Header[k])
		if k == "x5c" {
			if arr, ok := r.Header[k].([]any); ok {
				v = fmt.Sprintf("%d certificate(s), below", len(arr))
			}
		}
		fmt.Fprintf(w, "  %s\t%s\n", inspectPrintable(k), v)
	}
	fmt.Fprintf(w, "claims\n")
	for _, k := range inspectOrder(r.Claims, inspectClaimOrder) {
		v := inspectValue(r.Claims[k])
		if t, ok := r.Times[k]; ok {
			v = fmt.Sprintf("%s  (%s)", t.Time, t.Relative)
		} else if id, org := inspectOrgClaim(r.Claims[k]); id != "" {
			v = inspectPrintable(id)
			if org != "" {
				v += " (organisation number " + inspectPrintable(org) + ")"
			}
		}
		fmt.Fprintf(w, "  %s\t%s\n", inspectPrintable(k), v)
	}
	if r.Lifetime != nil {
		fmt.Fprintf(w, "  (exp - iat)\t%d s\n", *r.Lifetime)
	}
	for _, c := range r.Certificates {
		role := "leaf"
		if c.Index > 0 {
			role = "issuer"
		}
		fmt.Fprintf(w, "certificate %d (x5c, %s)\n", c.Index, role)
		if c.Error != "" {
			fmt.Fprintf(w, "  error\t%s\n", c.Error)
			continue
		}
		fmt.Fprintf(w, "  subject\t%s\n", inspectPrintable(c.Subject))
		if c.OrgNumber != "" {
			fmt.Fprintf(w, "  org number\t%s\n", c.OrgNumber)
		} else if c.Index == 0 {
			fmt.Fprintf(w, "  org number\tnone found\n")
		}
		fmt.Fprintf(w, "  issuer\t%s\n", inspectPrintable(c.Issuer))
		switch {
		case c.Environment != "":
			fmt.Fprintf(w, "  environment\t%s (from the issuing CA)\n", c.Environment)
		case c.Index == 0:
			fmt.Fprintf(w, "  environment\tunknown: not a known Buypass or Commfides CA\n")
		}
		fmt.Fprintf(w, "  valid\t%s to %s  (%s)\n", c.NotBefore, c.NotAfter, c.Validity)
		if len(c.KeyUsage) > 0 {
			fmt.Fprintf(w, "  key usage\t%s\n", strings.Join(c.KeyUsage, ", "))
		}
		fmt.Fprintf(w, "  public key\t%s\n", c.PublicKey)
		fmt.Fprintf(w, "  serial\t%s\n", c.Serial)
		fmt.Fprintf(w, "  sha256\t%s\n", c.SHA256)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem\t%s\n", inspectPrintable(p))
	}
	if r.Signature == 0 {
		fmt.Fprintf(w, "signature\tnone (unsigned JWT)\n")
	} else {
		fmt.Fprintf(w, "signature\t%d bytes, NOT verified\n", r.Signature)
	}
	return w.Flush()
}
