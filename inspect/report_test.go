package inspect_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/inspect"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// mustTime parses an RFC 3339 time.
func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// jsonOf encodes rep as mp-hsm inspect --output json prints it.
func jsonOf(t testing.TB, rep *inspect.Report) string {
	t.Helper()
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// TestGolden: the text and JSON forms of a grant and an access token are
// those in testdata (which cmd/mp-hsm's end-to-end test also compares the
// command's output with).
func TestGolden(t *testing.T) {
	for _, tc := range []struct{ name, now string }{
		{"grant", "2026-01-01T12:03:00Z"},
		{"access_token", "2026-01-01T12:01:15Z"},
	} {
		rep, err := inspect.Inspect(readJWT(t, tc.name), inspect.Options{Now: mustTime(t, tc.now)})
		if err != nil {
			t.Fatal(err)
		}
		var text bytes.Buffer
		if err := rep.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		for ext, got := range map[string]string{"txt": text.String(), "json": jsonOf(t, rep)} {
			golden := filepath.Join("testdata", tc.name+"."+ext)
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs (run with -update to accept):\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		}
	}
}

func TestRelativeTimes(t *testing.T) {
	jwt := readJWT(t, "access_token")
	// iat 2026-01-01T12:00:00Z, exp 120 s later.
	for _, tc := range []struct {
		now      string
		iat, exp string
		expired  bool
	}{
		{"2026-01-01T12:01:15Z", "1 min ago", "in 45 s", false},
		{"2026-01-01T12:05:00Z", "5 min ago", "expired 3 min ago", true},
		{"2026-01-01T11:59:50Z", "in 10 s (issued in the future: clock skew?)", "in 2 min", false},
		{"2026-01-01T12:02:00Z", "2 min ago", "expires now", true},
		{"2026-01-03T13:00:00Z", "2 days ago", "expired 2 days ago", true},
		{"2026-01-01T15:00:00Z", "3 h ago", "expired 2 h ago", true},
	} {
		rep, err := inspect.Inspect(jwt, inspect.Options{Now: mustTime(t, tc.now)})
		if err != nil {
			t.Fatal(err)
		}
		if got := rep.Times["iat"].Relative; got != tc.iat {
			t.Errorf("now %s: iat %q, want %q", tc.now, got, tc.iat)
		}
		if got := rep.Times["exp"].Relative; got != tc.exp {
			t.Errorf("now %s: exp %q, want %q", tc.now, got, tc.exp)
		}
		if rep.Expired == nil || *rep.Expired != tc.expired {
			t.Errorf("now %s: expired %v, want %v", tc.now, rep.Expired, tc.expired)
		}
		if rep.Times["exp"].Time != "2026-01-01T12:02:00Z" {
			t.Errorf("exp time %q", rep.Times["exp"].Time)
		}
		if rep.Now != tc.now {
			t.Errorf("now %q, want %q", rep.Now, tc.now)
		}
	}
}

func TestRelative(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		claim string
		d     time.Duration
		want  string
	}{
		{"exp", 45 * time.Second, "in 45 s"},
		{"exp", -200 * time.Second, "expired 3 min ago"},
		{"exp", 400 * time.Millisecond, "expires now"},
		{"iat", -59 * time.Second, "59 s ago"},
		{"iat", 0, "now"},
		{"nbf", 90 * time.Second, "in 1 min (not yet valid)"},
		{"nbf", -3 * time.Hour, "3 h ago"},
		{"exp", 47 * time.Hour, "in 47 h"},
		{"exp", 72 * time.Hour, "in 3 days"},
		{"not_after", -49 * time.Hour, "expired 2 days ago"},
	} {
		if got := inspect.Relative(tc.claim, now.Add(tc.d), now); got != tc.want {
			t.Errorf("%s %v: %q, want %q", tc.claim, tc.d, got, tc.want)
		}
	}
}

// TestPIDMasked: a pid shows its first six digits unless ShowPID asks for
// it in full, and the decoded JWT is not changed.
func TestPIDMasked(t *testing.T) {
	const pid = "01017012345"
	input := b64url(`{"alg":"RS256","kid":"k"}`) + "." +
		b64url(`{"iss":"c","aud":"https://test.maskinporten.no/","scope":"s","jti":"j","pid":"`+pid+`"}`) + ".c2ln"
	j, err := inspect.Decode(input)
	if err != nil {
		t.Fatal(err)
	}
	rep := inspect.Describe(j, inspect.Options{})
	if got := rep.Claims["pid"]; got != pid[:6]+"*****" {
		t.Errorf("pid %v, want it masked", got)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil || strings.Contains(text.String(), pid) {
		t.Errorf("text shows the pid (%v):\n%s", err, text.String())
	}
	if j.Claims["pid"] != pid {
		t.Errorf("Describe changed the JWT's claims: pid %v", j.Claims["pid"])
	}
	if got := inspect.Describe(j, inspect.Options{ShowPID: true}).Claims["pid"]; got != pid {
		t.Errorf("ShowPID: pid %v, want it in full", got)
	}
}

func TestKinds(t *testing.T) {
	hdr := b64url(`{"alg":"RS256","kid":"k"}`)
	for _, tc := range []struct{ claims, kind string }{
		{`{"iss":"c","aud":"a","jti":"j","scope":"s"}`, inspect.KindGrant},
		{`{"iss":"c","aud":"a","jti":"j","authorization_details":[]}`, inspect.KindGrant},
		{`{"client_id":"c","scope":"s"}`, inspect.KindAccessToken},
		{`{"consumer":{"ID":"0192:1"},"token_type":"Bearer"}`, inspect.KindAccessToken},
		{`{"urn:altinn:org":"x","client_id":"c"}`, inspect.KindAltinnToken},
		{`{"iss":"c","aud":"a","jti":"j"}`, inspect.KindJWT},
	} {
		rep, err := inspect.Inspect(hdr+"."+b64url(tc.claims)+".", inspect.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Kind != tc.kind {
			t.Errorf("%s: kind %q, want %q", tc.claims, rep.Kind, tc.kind)
		}
	}
}

// TestProblems: claims and certificates that cannot be read are reported,
// not fatal.
func TestProblems(t *testing.T) {
	hdr := b64url(`{"alg":"RS256","x5c":["@@",7]}`)
	rep, err := inspect.Inspect(hdr+"."+b64url(`{"iat":"x","exp":1e400}`)+".", inspect.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"claim iat: not a NumericDate (a number of seconds)", "claim exp: out of range for a date"}
	if strings.Join(rep.Problems, "|") != strings.Join(want, "|") {
		t.Errorf("problems %q, want %q", rep.Problems, want)
	}
	if len(rep.Certificates) != 2 || rep.Certificates[0].Error == "" || rep.Certificates[1].Error != "not a string" {
		t.Errorf("certificates %+v", rep.Certificates)
	}
	if rep.Expired != nil || rep.Signature != 0 {
		t.Errorf("expired %v, signature %d", rep.Expired, rep.Signature)
	}
}

func FuzzInspect(f *testing.F) {
	for _, name := range []string{"grant", "access_token"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name+".jwt")); err == nil {
			f.Add(string(b))
		}
	}
	hdr := b64url(`{"alg":"RS256","x5c":["MIIB","@@",7]}`)
	for _, s := range []string{
		"", ".", "..", "....", "a.b.c", "Bearer a.b.c", "Authorization: bearer x.y.z", `{"access_token":"a.b.c"}`, `{"access_token":null}`,
		hdr + "." + b64url(`{"iat":1e400,"exp":-1e400,"nbf":"x","consumer":{"ID":7}}`) + ".",
		hdr + "." + b64url(`{"iat":9223372036854775807,"exp":-9223372036854775808,"nbf":253402300800}`) + ".AA",
		b64url(`{"x5c":"not an array"}`) + "." + b64url(`{"urn:altinn:org":"x","k\u0000":"\u001b[2J"}`) + ".sig",
		b64url(`{}`) + "." + b64url("\xff\xfe") + ".",
	} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, input string) {
		j, err := inspect.Decode(input)
		if err != nil {
			if s := strings.TrimSpace(input); len(s) >= 24 && strings.Contains(err.Error(), s) {
				t.Errorf("the error quotes the input: %v", err)
			}
			return
		}
		rep := inspect.Describe(j, inspect.Options{Now: now})
		if _, err := json.Marshal(rep); err != nil {
			t.Errorf("JSON output: %v", err)
		}
		var buf bytes.Buffer
		if err := rep.WriteText(&buf); err != nil {
			t.Errorf("text output: %v", err)
		}
		if bytes.ContainsRune(buf.Bytes(), 0x1b) {
			t.Errorf("the text output holds an escape character")
		}
	})
}

// TestTextEscapedAndBounded: a claim that would reorder the terminal's
// text (U+202E) or flood it is shown by textsafe's rule, escaped and cut.
func TestTextEscapedAndBounded(t *testing.T) {
	long := strings.Repeat("a", 10000)
	input := b64url(`{"alg":"RS256","kid":"k"}`) + "." +
		b64url(`{"iss":"c\u202ex","aud":"https://test.maskinporten.no/","scope":"s","jti":"`+long+`"}`) + ".c2ln"
	j, err := inspect.Decode(input)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := inspect.Describe(j, inspect.Options{}).WriteText(&text); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	if strings.ContainsRune(out, '\u202e') || !strings.Contains(out, `c\u202ex`) {
		t.Errorf("U+202E not escaped:\n%s", out)
	}
	if strings.Contains(out, long) || !strings.Contains(out, strings.Repeat("a", 4096)+"...") {
		t.Errorf("a 10,000-character claim not cut to 4,096 with ...")
	}
}
