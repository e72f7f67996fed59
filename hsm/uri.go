package hsm

import (
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// URI is a parsed RFC 7512 PKCS #11 URI.
//
// String fields hold percent-decoded UTF-8 text, and "" means the attribute
// is absent. An attribute written with an empty value ("serial=") is also
// stored as "": the struct cannot tell the two apart, and an empty value
// selects nothing in particular. The same holds for ID, which is nil then.
type URI struct {
	// Path attributes select a library, slot, token and object.

	Token        string // token= : the token label (CK_TOKEN_INFO label)
	Manufacturer string // manufacturer= : the token's manufacturer ID
	Model        string // model= : the token model
	Serial       string // serial= : the token serial number

	SlotID           *uint  // slot-id= : the decimal CK_SLOT_ID; nil when absent
	SlotDescription  string // slot-description=
	SlotManufacturer string // slot-manufacturer=

	LibraryManufacturer string // library-manufacturer=
	LibraryDescription  string // library-description=
	LibraryVersion      string // library-version= : "M" or "M.N", as written

	// ID is id=, the object's CKA_ID: exactly the percent-decoded bytes.
	// "id=%01%02" is the two bytes 0x01 0x02 and "id=7370" is the four
	// bytes "7370"; the value is never read as hex or as text.
	ID     []byte
	Object string // object= : the object's CKA_LABEL
	// Type is type=: "private", "public", "cert", "secret-key" or "data".
	Type string

	// Query attributes say how to reach the token.

	ModuleName string // module-name= : a module name, as in "opensc-pkcs11"
	ModulePath string // module-path= : the module's file path
	PINSource  string // pin-source= : where to read the PIN, as given
	// PINValue is pin-value=, the PIN itself. String never writes it, and
	// errors from ParseURI never show it.
	PINValue string

	// Vendor holds the vendor attributes (names starting with "x-") from the
	// path and the query, keyed by their full name, values percent-decoded
	// and otherwise as given. It is nil when there are none.
	Vendor map[string]string

	// vendorQuery records which Vendor names came from the query, so that
	// String writes them back there; names not in it go to the path.
	vendorQuery map[string]bool
}

// ErrInvalidURI is matched, with errors.Is, by every error ParseURI returns.
var ErrInvalidURI = errors.New("invalid PKCS #11 URI")

// URIError reports why ParseURI refused a URI. errors.Is(err, ErrInvalidURI)
// is true for it.
type URIError struct {
	// URI is the input, with the value of any pin-value (and of any other
	// attribute whose name suggests a PIN or password) replaced by
	// "REDACTED".
	URI string
	// Attr names the attribute at fault, or is "" when the fault is not in
	// one (the scheme, a stray separator).
	Attr string
	// Offset is the byte offset of the fault in URI (the redacted form).
	Offset int
	// Reason says what is wrong and, where there is one, the fix.
	Reason string
}

// Error returns the reason with its place, and the redacted URI.
func (e *URIError) Error() string {
	where := fmt.Sprintf("at byte %d", e.Offset)
	if e.Attr != "" {
		where = fmt.Sprintf("attribute %q at byte %d", e.Attr, e.Offset)
	}
	return fmt.Sprintf("invalid PKCS #11 URI %q: %s: %s", e.URI, where, e.Reason)
}

// Is reports whether target is ErrInvalidURI.
func (e *URIError) Is(target error) bool { return target == ErrInvalidURI }

// The attribute names of RFC 7512, section 2.3, in the order String writes
// them.
var (
	uriPathNames = []string{
		"token", "manufacturer", "model", "serial",
		"slot-description", "slot-manufacturer", "slot-id",
		"library-manufacturer", "library-description", "library-version",
		"object", "type", "id",
	}
	uriQueryNames = []string{"module-name", "module-path", "pin-source", "pin-value"}
)

// uriTypes are the values of type=, with spellings people try instead.
var (
	uriTypes    = []string{"private", "public", "cert", "secret-key", "data"}
	uriTypeHint = map[string]string{
		"private-key": "private", "privkey": "private", "public-key": "public",
		"pubkey": "public", "certificate": "cert", "x509": "cert",
		"secret": "secret-key", "secretkey": "secret-key",
	}
)

// ParseURI parses a PKCS #11 URI as RFC 7512 defines it:
//
//	pkcs11:[path-attr *(";" path-attr)][?[query-attr *("&" query-attr)]]
//
// The scheme is case-insensitive; attribute names are not. Every attribute is
// name=value. The path attributes are
//
//	token, manufacturer, model, serial     token selection (CK_TOKEN_INFO)
//	slot-description, slot-manufacturer    slot selection (CK_SLOT_INFO)
//	slot-id                                a decimal CK_SLOT_ID, e.g. slot-id=0
//	library-manufacturer, library-description
//	library-version                        M or M.N, decimal, each at most 255
//	object                                 the CKA_LABEL
//	type                                   private, public, cert, secret-key or data
//	id                                     the CKA_ID bytes, e.g. id=%01%02
//
// and the query attributes are module-name, module-path, pin-source and
// pin-value. Vendor attributes are names starting with "x-" followed by
// letters, digits, '-' or '_'; they may appear in either part. (RFC 7512
// itself lets any other name made of those characters be a vendor attribute,
// and its own example uses vendor-aaa; ParseURI asks for "x-" so that a
// misspelt standard name, such as tokn, is reported instead of ignored.)
//
// Values are percent-encoded UTF-8 ("%20" for a space), except id, whose
// value is raw bytes and best written fully encoded. Letters, digits and
// -._~:[]@!$'()*+,= may be written as they are in both parts; '&' may also be
// in the path, and '/', '?' and '|' in the query. Anything else, including
// ';', '%', '#' and spaces, must be percent-encoded. slot-id, library-version
// and type take plain text only.
//
// ParseURI refuses, with a *URIError: a missing scheme, an unknown attribute,
// an attribute in the wrong part, a path attribute or a standard query
// attribute given twice, a vendor attribute given twice, an empty attribute,
// bad percent-encoding, a character that needs percent-encoding, text that
// is not UTF-8, a malformed slot-id, library-version or type, and pin-value
// together with pin-source (RFC 7512 says such a URI SHOULD be refused).
// An attribute with an empty value counts as absent (see URI).
//
// Examples:
//
//	pkcs11:token=Buypass%20ID;object=Authentication;type=private
//	pkcs11:slot-id=0;id=%01%02?module-path=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so
//	pkcs11:token=HSM1;object=maskinporten-2025?pin-source=file:/run/secrets/hsm-pin
//	pkcs11:token=SoftHSM;object=k1;x-vendor-flag=1?module-name=softhsm2&pin-value=1234
func ParseURI(s string) (*URI, error) {
	p := uriParser{in: s, u: &URI{}, path: map[string]int{}, query: map[string]int{}}
	if err := p.parse(); err != nil {
		return nil, err
	}
	return p.u, nil
}

type uriParser struct {
	in          string
	u           *URI
	path, query map[string]int // attribute name -> offset where first seen
}

func (p *uriParser) fail(off int, attr, format string, args ...any) *URIError {
	red, mapOff := uriRedact(p.in)
	return &URIError{URI: red, Attr: attr, Offset: mapOff(off), Reason: fmt.Sprintf(format, args...)}
}

const uriScheme = "pkcs11:"

func (p *uriParser) parse() error {
	s := p.in
	if len(s) < len(uriScheme) || !strings.EqualFold(s[:len(uriScheme)], uriScheme) {
		hint := ""
		if t := strings.TrimSpace(s); t != s && len(t) >= len(uriScheme) && strings.EqualFold(t[:len(uriScheme)], uriScheme) {
			hint = "; remove the whitespace around it"
		}
		return p.fail(0, "", `a PKCS #11 URI starts with "pkcs11:", as in "pkcs11:token=mytoken;object=mykey"%s`, hint)
	}
	off := len(uriScheme)
	rest := s[off:]
	path, query, hasQuery := strings.Cut(rest, "?")
	if err := p.component(path, off, false); err != nil {
		return err
	}
	if hasQuery {
		if err := p.component(query, off+len(path)+1, true); err != nil {
			return err
		}
	}
	src, hasSrc := p.query["pin-source"]
	val, hasVal := p.query["pin-value"]
	if hasSrc && hasVal {
		attr, at := "pin-value", val
		if src > val {
			attr, at = "pin-source", src
		}
		return p.fail(at, attr, "pin-source and pin-value must not both be given (RFC 7512 says to refuse such a URI); "+
			"keep pin-source and remove pin-value")
	}
	return nil
}

// component parses the path (query false) or the query starting at byte off.
func (p *uriParser) component(c string, off int, query bool) error {
	if c == "" {
		return nil
	}
	sep := ";"
	if query {
		sep = "&"
	}
	for {
		attr, more, found := strings.Cut(c, sep)
		if err := p.attribute(attr, off, query); err != nil {
			return err
		}
		if !found {
			return nil
		}
		off += len(attr) + 1
		c = more
	}
}

func (p *uriParser) attribute(a string, off int, query bool) error {
	part, sep := "path", ';'
	seen, names := p.path, uriPathNames
	if query {
		part, sep = "query", '&'
		seen, names = p.query, uriQueryNames
	}
	if a == "" {
		return p.fail(off, "", "empty attribute in the %s: remove the extra %q", part, sep)
	}
	name, raw, hasEq := strings.Cut(a, "=")
	if !hasEq {
		return p.fail(off, "", "expected name=value in the %s, found no '='", part)
	}
	if name == "" {
		return p.fail(off, "", "empty attribute name before '='")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !uriNameChar(c) {
			hint := ""
			if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
				hint = " (a PKCS #11 URI holds no whitespace: remove it)"
			}
			return p.fail(off+i, "", "%s is not allowed in an attribute name; names are letters, digits, '-' and '_'%s",
				uriDescribe(c), hint)
		}
	}
	vendor := uriVendorName(name)
	if !vendor && !slices.Contains(names, name) {
		return p.fail(off, name, "%s", uriUnknown(name, part, names))
	}
	if first, dup := seen[name]; dup {
		if vendor {
			return p.fail(off, name, "vendor attribute %s is given twice (first at byte %d); mp-hsm keeps one value "+
				"per vendor attribute, so give it once", name, first)
		}
		return p.fail(off, name, "%s is given twice (first at byte %d); each %s attribute may appear only once",
			name, first, part)
	}
	if first, dup := p.path[name]; dup && vendor && query {
		return p.fail(off, name, "vendor attribute %s is in both the path (byte %d) and the query; give it once", name, first)
	}
	seen[name] = off

	voff := off + len(name) + 1
	switch name {
	case "slot-id":
		return p.slotID(raw, voff)
	case "library-version":
		return p.libraryVersion(raw, voff)
	case "type":
		return p.objectType(raw, voff)
	}
	b, err := p.unescape(name, raw, voff, query)
	if err != nil {
		return err
	}
	if name == "id" {
		if len(b) > 0 {
			p.u.ID = b
		}
		return nil
	}
	if !vendor && !utf8.Valid(b) {
		return p.notUTF8(name, raw, voff, b)
	}
	v := string(b)
	switch name {
	case "token":
		p.u.Token = v
	case "manufacturer":
		p.u.Manufacturer = v
	case "model":
		p.u.Model = v
	case "serial":
		p.u.Serial = v
	case "slot-description":
		p.u.SlotDescription = v
	case "slot-manufacturer":
		p.u.SlotManufacturer = v
	case "library-manufacturer":
		p.u.LibraryManufacturer = v
	case "library-description":
		p.u.LibraryDescription = v
	case "object":
		p.u.Object = v
	case "module-name":
		p.u.ModuleName = v
	case "module-path":
		p.u.ModulePath = v
	case "pin-source":
		p.u.PINSource = v
	case "pin-value":
		p.u.PINValue = v
	default: // vendor
		if p.u.Vendor == nil {
			p.u.Vendor = map[string]string{}
		}
		p.u.Vendor[name] = v
		if query {
			if p.u.vendorQuery == nil {
				p.u.vendorQuery = map[string]bool{}
			}
			p.u.vendorQuery[name] = true
		}
	}
	return nil
}

// uriUnknown explains an unknown or misplaced attribute name.
func uriUnknown(name, part string, names []string) string {
	switch {
	case part == "path" && slices.Contains(uriQueryNames, name):
		return fmt.Sprintf("%s is a query attribute: put it after '?', as in pkcs11:token=t?%s=...", name, name)
	case part == "query" && slices.Contains(uriPathNames, name):
		return fmt.Sprintf("%s is a path attribute: put it before '?', as in pkcs11:%s=...", name, name)
	}
	lower := strings.ToLower(name)
	if slices.Contains(uriPathNames, lower) || slices.Contains(uriQueryNames, lower) {
		return fmt.Sprintf("unknown %s attribute %s: attribute names are case-sensitive; write %s", part, name, lower)
	}
	return fmt.Sprintf("unknown %s attribute %s; the %s attributes are %s, and vendor attributes start with \"x-\"",
		part, name, part, strings.Join(names, ", "))
}

func (p *uriParser) slotID(raw string, off int) error {
	if raw == "" {
		return p.fail(off, "slot-id", "slot-id needs a value: a decimal slot number, as in slot-id=0")
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] < '0' || raw[i] > '9' {
			return p.fail(off+i, "slot-id", "slot-id must be a decimal number written with the digits 0-9, found %s",
				uriDescribe(raw[i]))
		}
	}
	n, err := strconv.ParseUint(raw, 10, bits.UintSize)
	if err != nil {
		return p.fail(off, "slot-id", "slot-id %s does not fit in a %d-bit CK_SLOT_ID", raw, bits.UintSize)
	}
	id := uint(n)
	p.u.SlotID = &id
	return nil
}

func (p *uriParser) libraryVersion(raw string, off int) error {
	const want = "library-version must be M or M.N, decimal numbers of at most 255 (the CK_VERSION of the library), as in library-version=2.20"
	major, minor, dot := strings.Cut(raw, ".")
	for i, part := range []string{major, minor} {
		if i == 1 && !dot {
			break
		}
		start := off
		if i == 1 {
			start = off + len(major) + 1
		}
		if part == "" {
			return p.fail(start, "library-version", "%s; a number is missing", want)
		}
		for j := 0; j < len(part); j++ {
			if part[j] < '0' || part[j] > '9' {
				return p.fail(start+j, "library-version", "%s; found %s", want, uriDescribe(part[j]))
			}
		}
		if _, err := strconv.ParseUint(part, 10, 8); err != nil {
			return p.fail(start, "library-version", "%s; %s is too large", want, part)
		}
	}
	p.u.LibraryVersion = raw
	return nil
}

func (p *uriParser) objectType(raw string, off int) error {
	if raw == "" || slices.Contains(uriTypes, raw) {
		p.u.Type = raw
		return nil
	}
	reason := fmt.Sprintf("type %q is not one of %s", raw, strings.Join(uriTypes, ", "))
	if strings.ContainsRune(raw, '%') {
		reason += "; write the type as plain text, without percent-encoding"
	} else if t := uriTypeHint[strings.ToLower(raw)]; t != "" {
		reason += fmt.Sprintf("; did you mean type=%s?", t)
	} else if lower := strings.ToLower(raw); slices.Contains(uriTypes, lower) {
		reason += fmt.Sprintf("; types are lower case: type=%s", lower)
	}
	return p.fail(off, "type", "%s", reason)
}

// unescape percent-decodes raw, the value of attribute name at byte off, and
// checks that every other character may stand unescaped in its part. Reasons
// for a PIN-like attribute do not show its characters.
func (p *uriParser) unescape(name, raw string, off int, query bool) ([]byte, error) {
	secret := uriSecretName(name)
	part := "path"
	if query {
		part = "query"
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '%':
			if i+2 >= len(raw) || uriUnhex(raw[i+1]) < 0 || uriUnhex(raw[i+2]) < 0 {
				if secret {
					return nil, p.fail(off, name, "the value of %s has a '%%' not followed by two hexadecimal digits "+
						"(not shown; write a literal '%%' as %%25)", name)
				}
				return nil, p.fail(off+i, name, "malformed percent-encoding: '%%' must be followed by two hexadecimal "+
					"digits; write a literal '%%' as %%25")
			}
			out = append(out, byte(uriUnhex(raw[i+1])<<4|uriUnhex(raw[i+2])))
			i += 2
		case uriAllowed(c, query):
			out = append(out, c)
		default:
			if secret {
				return nil, p.fail(off, name, "the value of %s has a character that must be percent-encoded in the %s "+
					"(not shown); encode every character that is not a letter or digit as %%XX, or better, use pin-source",
					name, part)
			}
			return nil, p.fail(off+i, name, "%s is not allowed unescaped in the %s; percent-encode it as %%%02X",
				uriDescribe(c), part, c)
		}
	}
	return out, nil
}

// notUTF8 reports that the decoded value b of a text attribute is not UTF-8.
func (p *uriParser) notUTF8(name, raw string, off int, b []byte) error {
	if uriSecretName(name) {
		return p.fail(off, name, "the value of %s is not valid UTF-8 after percent-decoding (not shown)", name)
	}
	k := 0 // index in b of the first byte of the invalid sequence
	for k < len(b) {
		r, size := utf8.DecodeRune(b[k:])
		if r == utf8.RuneError && size <= 1 {
			break
		}
		k += size
	}
	i := 0 // the offset in raw that decoded to b[k]
	for n := 0; n < k; n++ {
		if raw[i] == '%' {
			i += 3
		} else {
			i++
		}
	}
	return p.fail(off+i, name, "the value of %s is not valid UTF-8 after percent-decoding: byte 0x%02X does not start "+
		"a valid sequence (PKCS #11 text attributes are UTF-8; only id takes arbitrary bytes)", name, b[k])
}

// String returns u in RFC 7512 form: the path attributes in a fixed order
// (token, manufacturer, model, serial, slot-description, slot-manufacturer,
// slot-id, library-manufacturer, library-description, library-version,
// object, type, id, then vendor attributes by name), then the query
// (module-name, module-path, pin-source, then vendor attributes). Values are
// percent-encoded where RFC 7512 requires it, and id is always encoded in
// full, byte by byte. Empty fields are left out, except vendor attributes,
// which are written as they are.
//
// String never writes PINValue: URIs end up in logs, error messages and
// process listings, and a PIN there would be a PIN anyone could read. Use
// HasPIN to learn whether the URI carried one. Apart from that, ParseURI of
// String gives back u for every URI that ParseURI returned. Vendor entries
// whose name is not a valid "x-" name are left out, since they could not be
// read back.
func (u *URI) String() string {
	var b strings.Builder
	b.WriteString(uriScheme)
	n := 0 // attributes written in the current part
	// start writes the separator, if one is due, and "attr=".
	start := func(attr string, sep byte) {
		if n > 0 {
			b.WriteByte(sep)
		}
		n++
		b.WriteString(attr)
		b.WriteByte('=')
	}
	text := func(attr, value string, query bool) {
		if value == "" {
			return
		}
		if query {
			start(attr, '&')
		} else {
			start(attr, ';')
		}
		uriEscape(&b, value, query)
	}

	text("token", u.Token, false)
	text("manufacturer", u.Manufacturer, false)
	text("model", u.Model, false)
	text("serial", u.Serial, false)
	text("slot-description", u.SlotDescription, false)
	text("slot-manufacturer", u.SlotManufacturer, false)
	if u.SlotID != nil {
		text("slot-id", strconv.FormatUint(uint64(*u.SlotID), 10), false)
	}
	text("library-manufacturer", u.LibraryManufacturer, false)
	text("library-description", u.LibraryDescription, false)
	text("library-version", u.LibraryVersion, false)
	text("object", u.Object, false)
	text("type", u.Type, false)
	if len(u.ID) > 0 {
		start("id", ';')
		for _, c := range u.ID {
			uriPercent(&b, c)
		}
	}
	vendor := slices.Sorted(maps.Keys(u.Vendor))
	for _, v := range vendor {
		if uriVendorName(v) && !u.vendorQuery[v] {
			start(v, ';')
			uriEscape(&b, u.Vendor[v], false)
		}
	}

	path := b.Len()
	b.WriteByte('?')
	n = 0
	text("module-name", u.ModuleName, true)
	text("module-path", u.ModulePath, true)
	text("pin-source", u.PINSource, true)
	// PINValue is left out on purpose: see the doc comment.
	for _, v := range vendor {
		if uriVendorName(v) && u.vendorQuery[v] {
			start(v, '&')
			uriEscape(&b, u.Vendor[v], true)
		}
	}
	if n == 0 {
		return b.String()[:path]
	}
	return b.String()
}

// HasPIN reports whether the URI carried a pin-value.
func (u *URI) HasPIN() bool { return u.PINValue != "" }

// uriNameChar reports whether c may be in an attribute name (pk11-v-attr-nm-char).
func uriNameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

func uriVendorName(name string) bool {
	if len(name) <= 2 || !strings.HasPrefix(name, "x-") {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !uriNameChar(name[i]) {
			return false
		}
	}
	return true
}

// uriAllowed reports whether c may stand unescaped in a value in the path
// (pk11-pchar) or the query (pk11-qchar), '%' aside.
func uriAllowed(c byte, query bool) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', // unreserved (RFC 3986)
		':', '[', ']', '@', '!', '$', '\'', '(', ')', '*', '+', ',', '=': // pk11-res-avail
		return true
	case '&':
		return !query
	case '/', '?', '|':
		return query
	}
	return false
}

func uriEscape(b *strings.Builder, s string, query bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; uriAllowed(c, query) {
			b.WriteByte(c)
		} else {
			uriPercent(b, c)
		}
	}
}

func uriPercent(b *strings.Builder, c byte) {
	const hex = "0123456789ABCDEF"
	b.WriteByte('%')
	b.WriteByte(hex[c>>4])
	b.WriteByte(hex[c&15])
}

func uriUnhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// uriDescribe names a byte for an error message.
func uriDescribe(c byte) string {
	switch {
	case c == ' ':
		return "a space"
	case c > ' ' && c < 0x7f:
		return fmt.Sprintf("%q", rune(c))
	}
	return fmt.Sprintf("byte 0x%02X", c)
}

// uriSecretName reports whether an attribute's value may be a PIN or a
// password and so must not appear in an error: pin-value, and, since people
// misspell it, any name that mentions a PIN or a password.
func uriSecretName(name string) bool {
	n := strings.ToLower(strings.TrimSpace(name))
	return n != "pin-source" && (strings.Contains(n, "pin") || strings.Contains(n, "pass"))
}

const uriRedacted = "REDACTED"

// uriRedact replaces the values of secret attributes in s (see
// uriSecretName) with "REDACTED". It reads s loosely, so that it also finds
// them in input ParseURI refuses, and it errs on the side of hiding: a
// secret value in the query runs to the next '&', one in the path to the
// next ';'. It returns the redacted text and a function that maps a byte
// offset in s to one in the redacted text.
func uriRedact(s string) (string, func(int) int) {
	type span struct{ start, end int }
	var spans []span
	query := strings.IndexByte(s, '?')
	start := 0
	for start < len(s) {
		j := start
		for j < len(s) && !strings.ContainsRune("=:;&?", rune(s[j])) {
			j++
		}
		if j == len(s) {
			break
		}
		if s[j] != '=' {
			start = j + 1
			continue
		}
		name, v := s[start:j], j+1
		if !uriSecretName(name) {
			start = v
			continue
		}
		stop := ";"
		if query >= 0 && v > query {
			stop = "&"
		}
		end := len(s)
		if k := strings.Index(s[v:], stop); k >= 0 {
			end = v + k
		}
		if end > v {
			spans = append(spans, span{v, end})
		}
		start = end
	}
	if len(spans) == 0 {
		return s, func(off int) int { return off }
	}
	var b strings.Builder
	last := 0
	for _, sp := range spans {
		b.WriteString(s[last:sp.start])
		b.WriteString(uriRedacted)
		last = sp.end
	}
	b.WriteString(s[last:])
	return b.String(), func(off int) int {
		shift := 0
		for _, sp := range spans {
			switch {
			case off >= sp.end:
				shift += len(uriRedacted) - (sp.end - sp.start)
			case off > sp.start:
				return sp.start + shift
			}
		}
		return off + shift
	}
}

// Selectors returns the token and key selection the URI describes: token,
// serial, manufacturer, model and slot-id choose the token; id and object
// choose the key. A type other than private, public or cert (or none)
// cannot name a signing key and gives an error matching ErrInvalidURI.
func (u *URI) Selectors() (TokenSelector, KeySelector, error) {
	switch u.Type {
	case "", "private", "public", "cert":
	default:
		return TokenSelector{}, KeySelector{}, &URIError{URI: u.String(), Attr: "type",
			Reason: "type=" + u.Type + " cannot name a signing key; use type=private or leave type out"}
	}
	ts := TokenSelector{Label: u.Token, Serial: u.Serial, Manufacturer: u.Manufacturer, Model: u.Model}
	if u.SlotID != nil {
		id := *u.SlotID
		ts.SlotID = &id
	}
	return ts, KeySelector{ID: u.ID, Label: u.Object}, nil
}
