package pkcs11uri

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

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
// HasPIN to learn whether the URI carried one. Apart from that, Parse of
// String gives back u for every URI that Parse returned. Vendor entries
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

// PINFile returns the file pin-source names: its value without a "file:"
// prefix (RFC 7512's example is pin-source=file:/etc/token); "" without one.
func (u *URI) PINFile() string { return strings.TrimPrefix(u.PINSource, "file:") }

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

// AttrError returns the *Error that refuses attribute attr of u for
// reason: its URI is u.String() and its Offset is where attr starts there
// (0 when String does not write attr). It is for a caller that refuses
// what a URI says although Parse accepted it, as hsm.SelectorsFromURI
// refuses vendor attributes; the error matches ErrInvalid like Parse's.
func (u *URI) AttrError(attr, reason string) *Error {
	s := u.String()
	return &Error{URI: s, Attr: attr, Offset: attrOffset(s, attr), Reason: reason}
}

// attrOffset returns the byte offset of attribute attr in s, a URI as
// String writes it, or 0. Unescaped ';' and '?' never occur in path values,
// nor '&' in query values, so the separators are found unambiguously.
func attrOffset(s, attr string) int {
	start := len(uriScheme)
	path, query, _ := strings.Cut(s[start:], "?")
	for _, part := range []struct {
		text string
		at   int
		sep  string
	}{{path, start, ";"}, {query, start + len(path) + 1, "&"}} {
		at := part.at
		for _, a := range strings.Split(part.text, part.sep) {
			if strings.HasPrefix(a, attr+"=") {
				return at
			}
			at += len(a) + 1
		}
	}
	return 0
}
