package hsm

import "strings"

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
// secret value runs to the end of s, since an unencoded '&' or ';' may be
// part of it. It returns the redacted text and a function that maps a byte
// offset in s to one in the redacted text.
func uriRedact(s string) (string, func(int) int) {
	type span struct{ start, end int }
	var spans []span
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
		// A PIN may hold any character, '&' and ';' among them when it
		// was not percent-encoded: the value may run to the end.
		end := len(s)
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
