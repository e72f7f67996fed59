package daemon

import (
	"strconv"
	"unicode/utf8"
)

// appendTokenJSON appends Maskinporten's token-response shape.
func appendTokenJSON(b []byte, access string, expiresIn int64, scope string) []byte {
	b = append(b, `{"access_token":`...)
	b = appendJSONString(b, access)
	b = append(b, `,"token_type":"Bearer","expires_in":`...)
	b = strconv.AppendInt(b, expiresIn, 10)
	b = append(b, `,"scope":`...)
	b = appendJSONString(b, scope)
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string. Characters that are not
// printable ASCII are escaped, so the answer is plain ASCII.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\t':
			b = append(b, '\\', 't')
		default:
			if c < 0x80 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
				break
			}
			// Non-ASCII: escape the whole UTF-8 sequence as UTF-16 units.
			r, size := utf8.DecodeRuneInString(s[i:])
			if r > 0xffff {
				r -= 0x10000
				hi, lo := 0xd800+(r>>10), 0xdc00+(r&0x3ff)
				b = append(b, '\\', 'u', hex[hi>>12&0xf], hex[hi>>8&0xf], hex[hi>>4&0xf], hex[hi&0xf])
				b = append(b, '\\', 'u', hex[lo>>12&0xf], hex[lo>>8&0xf], hex[lo>>4&0xf], hex[lo&0xf])
			} else {
				b = append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
			}
			i += size - 1
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
