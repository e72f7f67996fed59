package textsafe_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mp-hsm/mp-hsm/internal/textsafe"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Authentication", "Authentication"},
		{"Bjørnøya AS – 日本", "Bjørnøya AS – 日本"},
		{"a\nKEY 99\tfake", `a\nKEY 99\tfake`},
		{"\x1b[2J\x1b]0;x\x07", `\x1b[2J\x1b]0;x\a`},
		{"\u009b31m", `\u009b31m`},
		{"abc\u202egpj.exe", `abc\u202egpj.exe`},
		{"back\\slash", `back\\slash`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"\x7f", `\x7f`},
	} {
		if got := textsafe.Escape(tc.in); got != tc.want {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := strings.Repeat("A", 10000)
	if got := textsafe.Escape(long); got != strings.Repeat("A", textsafe.MaxOutput)+"..." {
		t.Errorf("Escape of 10,000 characters gave %d bytes", len(got))
	}
	if got := textsafe.EscapeN(strings.Repeat("\n", 10), 3); got != `\n\n\n...` {
		t.Errorf("EscapeN bound counts the runes of the input: %q", got)
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string // in the error; "" for none
	}{
		{"Next key", 32, ""},
		{"Bjørnøya", 8, ""},
		{"a\nb", 0, `control character \n`},
		{"\x1b[31m", 0, `control character \x1b`},
		{"x\u202e", 0, `control character \u202e`},
		{"bad\xff", 0, "not valid UTF-8"},
		{strings.Repeat("C", 65), 64, "65 characters, more than the 64 allowed"},
	} {
		err := textsafe.Check("--label", tc.in, tc.max)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Check(%q) = %v", tc.in, err)
		case tc.want != "" && (!errors.Is(err, textsafe.ErrInvalid) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Check(%q) = %v, want ErrInvalid saying %q", tc.in, err, tc.want)
		case err != nil && strings.IndexFunc(err.Error(), func(r rune) bool { return r == '\n' || r == 0x1b || r == utf8.RuneError }) >= 0:
			t.Errorf("Check(%q): the error quotes the raw value: %q", tc.in, err)
		}
	}
}

func ExampleEscape() {
	fmt.Println(textsafe.Escape("Auth\n  01  Fake\trow"))
	// Output: Auth\n  01  Fake\trow
}
