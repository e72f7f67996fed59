package pkcs11uri

import (
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// attribute parses a, one name=value attribute of the path (or the query) starting at byte off, into p.u.
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
	if i := strings.IndexFunc(name, notNameChar); i >= 0 {
		hint := ""
		if strings.IndexByte(" \t\n\r", name[i]) >= 0 {
			hint = " (a PKCS #11 URI holds no whitespace: remove it)"
		}
		return p.fail(off+i, "", "%s is not allowed in an attribute name; names are letters, digits, '-' and '_'%s",
			uriDescribe(name[i]), hint)
	}
	vendor := uriVendorName(name)
	if !vendor && !slices.Contains(names, name) {
		return p.fail(off, name, "%s", uriUnknown(name, part, names))
	}
	if vendor && uriSecretName(name) {
		// String would write its value, and errors quote String.
		return p.fail(off, name, "vendor attribute %s looks like a PIN or password (value not shown): "+
			"give the PIN by pin-source (a file) instead, and remove %s", name, name)
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
	b, err := p.unescape(name, raw, voff, part)
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
	if f := p.u.field(name); f != nil {
		*f = string(b)
		return nil
	}
	if p.u.Vendor == nil {
		p.u.Vendor = map[string]string{}
	}
	p.u.Vendor[name] = string(b)
	if query {
		if p.u.vendorQuery == nil {
			p.u.vendorQuery = map[string]bool{}
		}
		p.u.vendorQuery[name] = true
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

func nonDigit(s string) int {
	return strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
}

func (p *uriParser) slotID(raw string, off int) error {
	if raw == "" {
		return p.fail(off, "slot-id", "slot-id needs a value: a decimal slot number, as in slot-id=0")
	}
	if i := nonDigit(raw); i >= 0 {
		return p.fail(off+i, "slot-id", "slot-id must be a decimal number written with the digits 0-9, found %s",
			uriDescribe(raw[i]))
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
	major, _, _ := strings.Cut(raw, ".")
	for i, part := range strings.SplitN(raw, ".", 2) {
		start := off + i*(len(major)+1)
		if part == "" {
			return p.fail(start, "library-version", "%s; a number is missing", want)
		}
		if j := nonDigit(part); j >= 0 {
			return p.fail(start+j, "library-version", "%s; found %s", want, uriDescribe(part[j]))
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

// unescape percent-decodes raw, the value of attribute name at byte off,
// checking that the other characters may stand unescaped; for a PIN-like
// attribute the reason shows none of its characters.
func (p *uriParser) unescape(name, raw string, off int, part string) ([]byte, error) {
	secret, query := uriSecretName(name), part == "query"
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '%':
			h, err := strconv.ParseUint(raw[i+1:min(i+3, len(raw))], 16, 8)
			if err != nil || i+2 >= len(raw) {
				if secret {
					return nil, p.fail(off, name, "the value of %s has a '%%' not followed by two hexadecimal digits "+
						"(not shown; write a literal '%%' as %%25)", name)
				}
				return nil, p.fail(off+i, name, "malformed percent-encoding: '%%' must be followed by two hexadecimal "+
					"digits; write a literal '%%' as %%25")
			}
			out = append(out, byte(h))
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
	for r, size := utf8.DecodeRune(b); r != utf8.RuneError || size > 1; r, size = utf8.DecodeRune(b[k:]) {
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
