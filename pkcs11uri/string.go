package pkcs11uri

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// String returns u in RFC 7512 form: the path attributes in the order of
// Parse's table, then vendor ones by name; then the query likewise. Values
// are percent-encoded where RFC 7512 requires it, id byte by byte; empty
// fields (but vendor ones) are left out. Parse of String gives back any u
// Parse returned, apart from PINValue, which String never writes: URIs end
// up in logs, errors and process listings (use HasPIN).
func (u *URI) String() string {
	s, _ := u.format()
	return s
}

// format is String, also returning where each attribute written starts.
func (u *URI) format() (string, map[string]int) {
	var b strings.Builder
	b.WriteString(uriScheme)
	at := map[string]int{}
	n, sep := 0, byte(';') // attributes written in the current part, and its separator
	put := func(attr, value string) {
		if n > 0 {
			b.WriteByte(sep)
		}
		n++
		at[attr] = b.Len()
		b.WriteString(attr + "=")
		for i := 0; i < len(value); i++ {
			if c := value[i]; uriAllowed(c, sep == '&') {
				b.WriteByte(c)
			} else {
				fmt.Fprintf(&b, "%%%02X", c)
			}
		}
	}
	path := 0
	for _, names := range [][]string{uriPathNames, uriQueryNames[:3]} { // never pin-value: see String
		for _, name := range names {
			switch f := u.field(name); {
			case name == "slot-id" && u.SlotID != nil:
				put(name, strconv.FormatUint(uint64(*u.SlotID), 10))
			case name == "id" && len(u.ID) > 0:
				put(name, "")
				for _, c := range u.ID {
					fmt.Fprintf(&b, "%%%02X", c)
				}
			case f != nil && *f != "":
				put(name, *f)
			}
		}
		for _, v := range slices.Sorted(maps.Keys(u.Vendor)) {
			if uriVendorName(v) && u.vendorQuery[v] == (sep == '&') {
				val := u.Vendor[v]
				if uriSecretName(v) { // only in a URI built by hand: Parse refuses it
					val = uriRedacted
				}
				put(v, val)
			}
		}
		if sep == ';' {
			path = b.Len()
			b.WriteByte('?')
			n, sep = 0, '&'
		}
	}
	if n == 0 {
		return b.String()[:path], at
	}
	return b.String(), at
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

func notNameChar(r rune) bool { return r >= 0x80 || !uriNameChar(byte(r)) }

func uriVendorName(name string) bool {
	return len(name) > 2 && strings.HasPrefix(name, "x-") && !strings.ContainsFunc(name, notNameChar)
}

// uriAllowed reports whether c may stand unescaped in a value in the path
// (pk11-pchar) or the query (pk11-qchar), '%' aside.
func uriAllowed(c byte, query bool) bool {
	switch {
	case uriNameChar(c) || strings.IndexByte(".~:[]@!$'()*+,=", c) >= 0: // unreserved (RFC 3986) and pk11-res-avail
		return true
	case c == '&':
		return !query
	}
	return query && (c == '/' || c == '?' || c == '|')
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

// AttrError returns the *Error, matching ErrInvalid, that refuses attribute
// attr of u for reason, with the offset of attr in u.String() (0 when absent):
// for a caller that refuses what Parse accepted, as hsm.SelectorsFromURI does.
func (u *URI) AttrError(attr, reason string) *Error {
	s, at := u.format()
	return &Error{URI: s, Attr: attr, Offset: at[attr], Reason: reason}
}
