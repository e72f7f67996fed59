// Package textsafe is mp-hsm's one rule for text that comes from a card, an
// API, a certificate or a caller: on output it is bounded and its control
// characters are escaped, so that it cannot forge a table row, move the
// cursor or flood a terminal or a log; on input (a label, a CSR field) a
// control character or an over-long value is refused.
//
// Every command that prints such a value (list, admin keys list, doctor,
// errors that quote one) calls Escape; every flag that puts a value on a
// token or in a certificate request calls Check.
package textsafe

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxOutput is how many characters (runes) of a value Escape shows.
const MaxOutput = 200

// Escape returns s for a terminal or a log line: each control character
// (C0, DEL, C1, and the Unicode format characters that reorder text, such
// as U+202E) written as a Go escape (\n, \x1b, \u202e), invalid UTF-8 as
// \xNN, and the result cut to MaxOutput runes of s with "..." after.
// Printable text, accents and non-Latin scripts included, is unchanged.
func Escape(s string) string {
	return EscapeN(s, MaxOutput)
}

// EscapeN is Escape with a bound of max runes (max <= 0: no bound).
func EscapeN(s string, max int) string {
	if clean(s) && (max <= 0 || utf8.RuneCountInString(s) <= max) {
		return s
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(s); {
		if max > 0 && n == max {
			b.WriteString("...")
			break
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafeRune(r):
			q := strconv.QuoteRune(r) // '\n', '\x1b', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		case r == '\\':
			b.WriteString(`\\`)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
		n++
	}
	return b.String()
}

// clean reports whether s needs no escaping.
func clean(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r == '\\' || unsafeRune(r) {
			return false
		}
	}
	return true
}

// unsafeRune: control characters and the format characters (Unicode Cf:
// bidirectional overrides, zero-width joiners) that change how the text
// around them is shown.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
}

// ErrInvalid: a value given as input holds a control character, is not
// UTF-8, or is longer than its field allows.
var ErrInvalid = errors.New("value not accepted")

// Check returns an error wrapping ErrInvalid when s, the value of what
// (such as "--label"), holds a control or format character or invalid
// UTF-8, or has more than max runes (max <= 0: no bound). The error
// quotes s escaped.
func Check(what, s string, max int) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s \"%s\" is not valid UTF-8: %w", what, EscapeN(s, 40), ErrInvalid)
	}
	for _, r := range s {
		if unsafeRune(r) {
			return fmt.Errorf("%s \"%s\" holds the control character %s: use printable characters only: %w",
				what, EscapeN(s, 40), strings.Trim(strconv.QuoteRune(r), "'"), ErrInvalid)
		}
	}
	if n := utf8.RuneCountInString(s); max > 0 && n > max {
		return fmt.Errorf("%s \"%s\" has %d characters, more than the %d allowed: %w", what, EscapeN(s, 40), n, max, ErrInvalid)
	}
	return nil
}
