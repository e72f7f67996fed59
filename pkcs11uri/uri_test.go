package pkcs11uri

import (
	"errors"
	"fmt"
	"math/bits"
	"reflect"
	"strings"
	"testing"
)

func uintPtr(n uint) *uint { return &n }

// inQuery marks vendor attributes as read from the query.
func inQuery(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *URI
	}{
		// The examples of RFC 7512, section 3, each joined onto one line.
		{"rfc empty", "pkcs11:", &URI{}},
		{"rfc public key", "pkcs11:object=my-pubkey;type=public", &URI{Object: "my-pubkey", Type: "public"}},
		{"rfc pin-source", "pkcs11:object=my-key;type=private?pin-source=file:/etc/token",
			&URI{Object: "my-key", Type: "private", PINSource: "file:/etc/token"}},
		{"rfc full certificate",
			"pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;" +
				"object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin",
			&URI{Token: "The Software PKCS#11 Softtoken", Manufacturer: "Snake Oil, Inc.", Model: "1.0",
				Object: "my-certificate", Type: "cert", ID: []byte{0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91},
				PINSource: "file:/etc/token_pin"}},
		{"rfc module-name", "pkcs11:object=my-sign-key;type=private?module-name=mypkcs11",
			&URI{Object: "my-sign-key", Type: "private", ModuleName: "mypkcs11"}},
		{"rfc module-path", "pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1",
			&URI{Object: "my-sign-key", Type: "private", ModulePath: "/mnt/libmypkcs11.so.1"}},
		{"rfc pin-value",
			"pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin",
			&URI{Token: "Software PKCS#11 softtoken", Manufacturer: "Snake Oil, Inc.", PINValue: "the-pin"}},
		{"rfc slot-description", "pkcs11:slot-description=Sun%20Metaslot", &URI{SlotDescription: "Sun Metaslot"}},
		{"rfc library",
			"pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;library-version=1.23",
			&URI{LibraryManufacturer: "Snake Oil, Inc.", LibraryDescription: "Soft Token Library", LibraryVersion: "1.23"}},
		{"rfc mixed-case hex",
			"pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;id=%01%02%03%Ba%dd%Ca%fe%04%05%06",
			&URI{Token: "My token% created by Joe", LibraryVersion: "3",
				ID: []byte{1, 2, 3, 0xba, 0xdd, 0xca, 0xfe, 4, 5, 6}}},
		{"rfc encoded separator", "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
			&URI{Token: "A name with a substring %;", Object: "my-certificate", Type: "cert"}},
		{"rfc utf-8", "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert",
			&URI{Token: "Name with a small A with acute: á", Object: "my-certificate", Type: "cert"}},
		// The RFC's vendor example, with the "x-" names Parse asks for
		// (see TestParseErrors for the original).
		{"rfc vendor, x- names",
			"pkcs11:token=my-token;object=my-certificate;type=cert;x-vendor-aaa=value-a?pin-source=file:/etc/token_pin&x-vendor-bbb=value-b",
			&URI{Token: "my-token", Object: "my-certificate", Type: "cert", PINSource: "file:/etc/token_pin",
				Vendor: map[string]string{"x-vendor-aaa": "value-a", "x-vendor-bbb": "value-b"}, vendorQuery: inQuery("x-vendor-bbb")}},

		// id is bytes, exactly as percent-decoded: never hex, never guessed.
		{"id encoded", "pkcs11:id=%01%02", &URI{ID: []byte{1, 2}}},
		{"id plain text is text", "pkcs11:id=7370", &URI{ID: []byte("7370")}},
		{"id mixed", "pkcs11:id=a%00b", &URI{ID: []byte{'a', 0, 'b'}}},
		{"id empty is absent", "pkcs11:id=", &URI{}},

		{"scheme is case-insensitive", "PKCS11:token=t", &URI{Token: "t"}},
		{"Scheme mixed case", "Pkcs11:token=t", &URI{Token: "t"}},
		{"empty query", "pkcs11:?", &URI{}},
		{"query only", "pkcs11:?module-path=/usr/lib/softhsm/libsofthsm2.so",
			&URI{ModulePath: "/usr/lib/softhsm/libsofthsm2.so"}},
		{"slot-id", "pkcs11:slot-id=0", &URI{SlotID: uintPtr(0)}},
		{"slot-id leading zeros", "pkcs11:slot-id=007", &URI{SlotID: uintPtr(7)}},
		{"slot-id max", fmt.Sprintf("pkcs11:slot-id=%d", uint(1<<bits.UintSize-1)), &URI{SlotID: uintPtr(1<<bits.UintSize - 1)}},
		{"library-version major only", "pkcs11:library-version=2", &URI{LibraryVersion: "2"}},
		{"library-version 255.255", "pkcs11:library-version=255.255", &URI{LibraryVersion: "255.255"}},
		{"every type", "pkcs11:type=secret-key", &URI{Type: "secret-key"}},
		{"type data", "pkcs11:type=data", &URI{Type: "data"}},
		{"type empty is absent", "pkcs11:type=", &URI{}},
		{"all path attributes",
			"pkcs11:token=T;manufacturer=M;model=Mo;serial=S;slot-description=SD;slot-manufacturer=SM;slot-id=3;" +
				"library-manufacturer=LM;library-description=LD;library-version=2.40;object=O;type=private;id=%AB",
			&URI{Token: "T", Manufacturer: "M", Model: "Mo", Serial: "S", SlotDescription: "SD", SlotManufacturer: "SM",
				SlotID: uintPtr(3), LibraryManufacturer: "LM", LibraryDescription: "LD", LibraryVersion: "2.40",
				Object: "O", Type: "private", ID: []byte{0xab}}},
		{"reserved characters allowed unescaped in the path", "pkcs11:object=a:b[c]@d!e$f'g(h)i*j+k,l=m&n~o.p_q-r",
			&URI{Object: "a:b[c]@d!e$f'g(h)i*j+k,l=m&n~o.p_q-r"}},
		{"'/', '?' and '|' allowed unescaped in the query", "pkcs11:?pin-source=|/usr/bin/get-pin?x=1",
			&URI{PINSource: "|/usr/bin/get-pin?x=1"}},
		{"'&' encoded in the query", "pkcs11:?module-name=a%26b", &URI{ModuleName: "a&b"}},
		{"';' encoded in the path", "pkcs11:object=a%3Bb", &URI{Object: "a;b"}},
		{"vendor in the path", "pkcs11:x-a_1=v%20w", &URI{Vendor: map[string]string{"x-a_1": "v w"}}},
		{"empty vendor value kept", "pkcs11:x-a=", &URI{Vendor: map[string]string{"x-a": ""}}},
		{"vendor value need not be UTF-8", "pkcs11:?x-raw=%FF", &URI{Vendor: map[string]string{"x-raw": "\xff"},
			vendorQuery: inQuery("x-raw")}},
		{"module-name and module-path together", "pkcs11:?module-name=softhsm2&module-path=/usr/lib/libsofthsm2.so",
			&URI{ModuleName: "softhsm2", ModulePath: "/usr/lib/libsofthsm2.so"}},
		{"empty pin-value is no PIN", "pkcs11:?pin-value=", &URI{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q)\n got %#v\nwant %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in     string
		attr   string
		offset int
		reason string // a substring of Reason
	}{
		{"", "", 0, `starts with "pkcs11:"`},
		{"pkcs11", "", 0, `starts with "pkcs11:"`},
		{"pkcs12:token=a", "", 0, `starts with "pkcs11:"`},
		{" pkcs11:token=a", "", 0, "remove the whitespace around it"},

		// Attribute names.
		{"pkcs11:tokn=a", "tokn", 7, "unknown path attribute tokn; the path attributes are token, manufacturer, model"},
		{"pkcs11:?modul-path=/x", "modul-path", 8,
			"unknown query attribute modul-path; the query attributes are module-name, module-path, pin-source, pin-value"},
		{"pkcs11:Token=a", "Token", 7, "case-sensitive; write token"},
		{"pkcs11:token=a;vendor-aaa=value-a", "vendor-aaa", 15, `vendor attributes start with "x-"`},
		{"pkcs11:?x-=a", "x-", 8, "unknown query attribute x-"},
		{"pkcs11:pin-source=file:/p", "pin-source", 7, "pin-source is a query attribute: put it after '?'"},
		{"pkcs11:?object=k", "object", 8, "object is a path attribute: put it before '?'"},
		{"pkcs11:=a", "", 7, "empty attribute name"},
		{"pkcs11:token", "", 7, "expected name=value"},
		{"pkcs11:token=a;", "", 15, `remove the extra ';'`},
		{"pkcs11:;token=a", "", 7, `remove the extra ';'`},
		{"pkcs11:token=a;;object=b", "", 15, `remove the extra ';'`},
		{"pkcs11:?module-name=a&", "", 22, `remove the extra '&'`},
		{"pkcs11:token=a; object=b", "", 15, "a space is not allowed in an attribute name; names are letters, digits, '-' and '_' (a PKCS #11 URI holds no whitespace: remove it)"},
		{"pkcs11:tok%65n=a", "", 10, `'%' is not allowed in an attribute name`},

		// Duplicates.
		{"pkcs11:token=a;token=b", "token", 15, "token is given twice (first at byte 7)"},
		{"pkcs11:serial=;serial=", "serial", 15, "serial is given twice"},
		{"pkcs11:?module-name=a&module-name=b", "module-name", 22, "module-name is given twice"},
		{"pkcs11:x-a=1;x-a=2", "x-a", 13, "vendor attribute x-a is given twice"},
		{"pkcs11:?x-a=1&x-a=2", "x-a", 14, "vendor attribute x-a is given twice"},
		{"pkcs11:x-a=1?x-a=2", "x-a", 13, "in both the path (byte 7) and the query"},

		// Percent-encoding and characters that need it.
		{"pkcs11:token=a%2", "token", 14, "malformed percent-encoding"},
		{"pkcs11:token=a%zz", "token", 14, "write a literal '%' as %25"},
		{"pkcs11:token=%", "token", 13, "malformed percent-encoding"},
		{"pkcs11:object=my key", "object", 16, "a space is not allowed unescaped in the path; percent-encode it as %20"},
		{"pkcs11:object=a/b", "object", 15, `'/' is not allowed unescaped in the path; percent-encode it as %2F`},
		{"pkcs11:object=a|b", "object", 15, "percent-encode it as %7C"},
		{"pkcs11:object=a#frag", "object", 15, "percent-encode it as %23"},
		{`pkcs11:object=a"b`, "object", 15, "percent-encode it as %22"},
		{"pkcs11:?module-path=/a;b", "module-path", 22, "not allowed unescaped in the query; percent-encode it as %3B"},
		{"pkcs11:object=\xc3\xa1", "object", 14, "byte 0xC3 is not allowed unescaped in the path; percent-encode it as %C3"},
		{"pkcs11:object=a\x00", "object", 15, "byte 0x00"},
		{"pkcs11:object=a\nb", "object", 15, "byte 0x0A"},

		// UTF-8.
		{"pkcs11:object=%C3%28", "object", 14, "not valid UTF-8 after percent-decoding: byte 0xC3"},
		{"pkcs11:token=ok%FF", "token", 15, "byte 0xFF"},
		{"pkcs11:token=%C3%A1%E2%82", "token", 19, "byte 0xE2"},
		{"pkcs11:?module-path=/lib/%FE.so", "module-path", 25, "byte 0xFE"},

		// slot-id.
		{"pkcs11:slot-id=", "slot-id", 15, "slot-id needs a value"},
		{"pkcs11:slot-id=abc", "slot-id", 15, "decimal number"},
		{"pkcs11:slot-id=1x", "slot-id", 16, `found 'x'`},
		{"pkcs11:slot-id=-1", "slot-id", 15, `found '-'`},
		{"pkcs11:slot-id=0x1", "slot-id", 16, "decimal number"},
		{"pkcs11:slot-id=%31", "slot-id", 15, `found '%'`},
		{"pkcs11:slot-id=99999999999999999999999", "slot-id", 15, "does not fit"},
		{fmt.Sprintf("pkcs11:slot-id=%d0", uint(1<<bits.UintSize-1)), "slot-id", 15, "does not fit"},

		// library-version.
		{"pkcs11:library-version=", "library-version", 23, "a number is missing"},
		{"pkcs11:library-version=1.", "library-version", 25, "a number is missing"},
		{"pkcs11:library-version=.1", "library-version", 23, "a number is missing"},
		{"pkcs11:library-version=1.2.3", "library-version", 26, `found '.'`},
		{"pkcs11:library-version=v1", "library-version", 23, `found 'v'`},
		{"pkcs11:library-version=256", "library-version", 23, "256 is too large"},
		{"pkcs11:library-version=1.1000", "library-version", 25, "1000 is too large"},

		// type.
		{"pkcs11:type=key", "type", 12, `type "key" is not one of private, public, cert, secret-key, data`},
		{"pkcs11:type=private-key", "type", 12, "did you mean type=private?"},
		{"pkcs11:type=certificate", "type", 12, "did you mean type=cert?"},
		{"pkcs11:type=CERT", "type", 12, "types are lower case: type=cert"},
		{"pkcs11:type=%63ert", "type", 12, "without percent-encoding"},

		// PIN rules.
		{"pkcs11:?pin-source=file:/p&pin-value=1234", "pin-value", 27, "pin-source and pin-value must not both be given"},
		// After a pin-value everything is hidden (an unencoded '&' may be
		// part of the PIN): the offset is where the hidden text starts.
		{"pkcs11:?pin-value=1234&pin-source=file:/p", "pin-source", 18, "keep pin-source and remove pin-value"},
		{"pkcs11:?pin-value=&pin-source=file:/p", "pin-source", 18, "must not both be given"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %#v, want an error", tt.in, u)
			}
			if u != nil {
				t.Errorf("Parse(%q) returned a URI with its error", tt.in)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
			var ue *Error
			if !errors.As(err, &ue) {
				t.Fatalf("error %T is not a *Error", err)
			}
			if ue.Attr != tt.attr || ue.Offset != tt.offset || !strings.Contains(ue.Reason, tt.reason) {
				t.Errorf("Parse(%q):\n got Attr %q, Offset %d, Reason %q\nwant Attr %q, Offset %d, Reason containing %q",
					tt.in, ue.Attr, ue.Offset, ue.Reason, tt.attr, tt.offset, tt.reason)
			}
			if ue.URI != tt.in && !strings.Contains(ue.URI, uriRedacted) {
				t.Errorf("Error.URI = %q, want the input %q", ue.URI, tt.in)
			}
			if !strings.Contains(err.Error(), ue.Reason) {
				t.Errorf("Error() = %q does not contain the reason", err.Error())
			}
		})
	}
}

// TestParseRedactsPIN checks that no error shows a PIN, wherever it was
// put and whatever is wrong with the URI.
func TestParseRedactsPIN(t *testing.T) {
	const pin = "s3cr3t"
	tests := []struct {
		in      string
		wantURI string
		offset  int
	}{
		{"pkcs11:?pin-source=file:/p&pin-value=" + pin,
			"pkcs11:?pin-source=file:/p&pin-value=REDACTED", 27},
		{"pkcs11:?pin-value=" + pin + "&bogus=1",
			"pkcs11:?pin-value=REDACTED", 18}, // the rest may be part of the PIN
		{"pkcs11:?pin-value=" + pin + "&pin-value=" + pin,
			"pkcs11:?pin-value=REDACTED", 18},
		{"pkcs11:pin-value=" + pin,
			"pkcs11:pin-value=REDACTED", 7},
		{"pkcs11:pin-value=" + pin + ";token=a",
			"pkcs11:pin-value=REDACTED", 7},
		{"pkcs11:token=a?pin=" + pin,
			"pkcs11:token=a?pin=REDACTED", 15},
		{"pkcs11:token=a?PIN-VALUE=" + pin,
			"pkcs11:token=a?PIN-VALUE=REDACTED", 15},
		{"pkcs11:token=a?password=" + pin,
			"pkcs11:token=a?password=REDACTED", 15},
		{"pkcs11:?pin-value=" + pin + "%2",
			"pkcs11:?pin-value=REDACTED", 18},
		{"pkcs11:?pin-value=" + pin + "%zz&module-name=m",
			"pkcs11:?pin-value=REDACTED", 18},
		{"pkcs11:?pin-value=" + pin + " x",
			"pkcs11:?pin-value=REDACTED", 18},
		{"pkcs11:?pin-value=" + pin + ";x",
			"pkcs11:?pin-value=REDACTED", 18},
		{"pkcs11:?pin-value=" + pin + "%FF",
			"pkcs11:?pin-value=REDACTED", 18},
		{"pkcs11:?pin-value=" + pin + "&module-name=a b",
			"pkcs11:?pin-value=REDACTED", 18},
		{"pkcs11:token=x?pin-value=WRONG&tail", // an unencoded '&' in the PIN
			"pkcs11:token=x?pin-value=REDACTED", 25},
		{"pkcs11:token=a b?pin-value=" + pin,
			"pkcs11:token=a b?pin-value=REDACTED", 14},
		{"http:?pin-value=" + pin,
			"http:?pin-value=REDACTED", 0},
		{"pkcs11:?pin-value = " + pin,
			"pkcs11:?pin-value =REDACTED", 17},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := Parse(tt.in)
			var ue *Error
			if !errors.As(err, &ue) {
				t.Fatalf("Parse(%q) = %v, want a *Error", tt.in, err)
			}
			if strings.Contains(err.Error(), pin) || strings.Contains(ue.Reason, pin) ||
				strings.Contains(err.Error(), "WRONG") || strings.Contains(err.Error(), "tail") {
				t.Errorf("error shows the PIN: %v", err)
			}
			if ue.URI != tt.wantURI || ue.Offset != tt.offset {
				t.Errorf("got URI %q offset %d, want %q offset %d", ue.URI, ue.Offset, tt.wantURI, tt.offset)
			}
		})
	}
}

func TestURIString(t *testing.T) {
	tests := []struct {
		name string
		u    *URI
		want string
	}{
		{"empty", &URI{}, "pkcs11:"},
		{"token and key", &URI{Token: "Buypass ID", Object: "Authentication", Type: "private"},
			"pkcs11:token=Buypass%20ID;object=Authentication;type=private"},
		{"id is encoded in full", &URI{ID: []byte("7370")}, "pkcs11:id=%37%33%37%30"},
		{"id bytes", &URI{ID: []byte{1, 2}}, "pkcs11:id=%01%02"},
		{"slot 0", &URI{SlotID: uintPtr(0)}, "pkcs11:slot-id=0"},
		{"path escaping", &URI{Object: "a;b/c?d|e%f&g=h, é"}, "pkcs11:object=a%3Bb%2Fc%3Fd%7Ce%25f&g=h,%20%C3%A9"},
		{"query escaping", &URI{PINSource: "|/bin/pin?a&b;c"}, "pkcs11:?pin-source=|/bin/pin?a%26b%3Bc"},
		{"pin-value is never written", &URI{Token: "t", PINValue: "1234"}, "pkcs11:token=t"},
		{"pin-value alone leaves no query", &URI{PINValue: "1234"}, "pkcs11:"},
		{"pin-value left out between query attributes",
			&URI{ModuleName: "m", PINValue: "1234", Vendor: map[string]string{"x-q": "v"}, vendorQuery: inQuery("x-q")},
			"pkcs11:?module-name=m&x-q=v"},
		{"vendor attributes sorted, in their part",
			&URI{Token: "t", Vendor: map[string]string{"x-b": "2", "x-a": "1", "x-q": "/?"}, vendorQuery: inQuery("x-q")},
			"pkcs11:token=t;x-a=1;x-b=2?x-q=/?"},
		{"vendor attributes set by hand go in the path", &URI{Vendor: map[string]string{"x-a": "1"}}, "pkcs11:x-a=1"},
		{"invalid vendor names are left out",
			&URI{Vendor: map[string]string{"token": "t", "x-": "1", "x-a;b": "2", "y-a": "3", "x-ok": "4"}},
			"pkcs11:x-ok=4"},
		{"order",
			&URI{Type: "cert", Object: "o", ID: []byte{0xff}, Token: "t", Serial: "s", SlotID: uintPtr(1),
				ModulePath: "/m.so", PINSource: "file:/p", ModuleName: "n", LibraryVersion: "1.0"},
			"pkcs11:token=t;serial=s;slot-id=1;library-version=1.0;object=o;type=cert;id=%FF" +
				"?module-name=n&module-path=/m.so&pin-source=file:/p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.u.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestURIStringRoundTrip checks that String reads back as the same URI,
// apart from the PIN, and that String's output is a fixed point.
func TestURIStringRoundTrip(t *testing.T) {
	for _, in := range uriSeeds {
		u, err := Parse(in)
		if err != nil {
			continue // the seeds include refused URIs
		}
		t.Run(in, func(t *testing.T) { checkRoundTrip(t, u) })
	}
}

func checkRoundTrip(t *testing.T, u *URI) {
	t.Helper()
	s := u.String()
	got, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse(String() = %q): %v", s, err)
	}
	want := *u
	want.PINValue = ""
	if !reflect.DeepEqual(got, &want) {
		t.Fatalf("Parse(String() = %q)\n got %#v\nwant %#v", s, got, &want)
	}
	if s2 := got.String(); s2 != s {
		t.Fatalf("String is not canonical: %q, then %q", s, s2)
	}
	if u.PINValue != "" && strings.Contains(s, "pin-value") {
		t.Fatalf("String() = %q includes pin-value", s)
	}
}

func TestURIHasPIN(t *testing.T) {
	for in, want := range map[string]bool{
		"pkcs11:?pin-value=1234":          true,
		"pkcs11:?pin-value=":              false,
		"pkcs11:?pin-source=file:/p":      false,
		"pkcs11:token=t?pin-value=%31%32": true,
	} {
		u, err := Parse(in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if got := u.HasPIN(); got != want {
			t.Errorf("Parse(%q).HasPIN() = %v, want %v", in, got, want)
		}
	}
}

// TestAttrError: the error places the attribute in String's form, matches
// ErrInvalid, and shows no PIN.
func TestAttrError(t *testing.T) {
	u, err := Parse("pkcs11:x-b=1;token=t;type=data?module-name=m&pin-value=1234")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		attr   string
		offset int
	}{{"token", 7}, {"type", 15}, {"x-b", 25}, {"module-name", 31}, {"pin-value", 0}, {"absent", 0}} {
		e := u.AttrError(tc.attr, "refused")
		if !errors.Is(e, ErrInvalid) || e.URI != "pkcs11:token=t;type=data;x-b=1?module-name=m" ||
			e.Attr != tc.attr || e.Offset != tc.offset || e.Reason != "refused" {
			t.Errorf("AttrError(%q) = %#v; want offset %d", tc.attr, e, tc.offset)
		}
		if strings.Contains(e.Error(), "1234") {
			t.Errorf("AttrError shows the PIN: %v", e)
		}
	}
}

// uriSeeds are the fuzzing seeds, also used by TestURIStringRoundTrip.
var uriSeeds = []string{
	"pkcs11:",
	"pkcs11:?",
	"pkcs11:object=my-pubkey;type=public",
	"pkcs11:object=my-key;type=private?pin-source=file:/etc/token",
	"pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;" +
		"object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin",
	"pkcs11:object=my-sign-key;type=private?module-name=mypkcs11",
	"pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1",
	"pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin",
	"pkcs11:slot-description=Sun%20Metaslot",
	"pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;library-version=1.23",
	"pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;id=%01%02%03%Ba%dd%Ca%fe%04%05%06",
	"pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
	"pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert",
	"pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a?pin-source=file:/etc/token_pin&vendor-bbb=value-b",
	"pkcs11:token=my-token;object=my-certificate;type=cert;x-vendor-aaa=value-a?pin-source=file:/etc/token_pin&x-vendor-bbb=value-b",
	"pkcs11:id=7370",
	"pkcs11:x-empty=?x-q=",
	"pkcs11:slot-id=18446744073709551615;object=a:b[c]@d!e$f'g(h)i*j+k,l=m&n~o.p_q-r",
	"PKCS11:token=t?pin-source=|/usr/bin/get-pin?x=1&x-raw=%FF",
	"pkcs11:?pin-source=file:/p&pin-value=1234",
	"pkcs11:token=a;token=b",
	"pkcs11:object=%C3%28",
	"pkcs11:token=a%2",
}

func FuzzParse(f *testing.F) {
	for _, s := range uriSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		u, err := Parse(in)
		if err != nil {
			var ue *Error
			if !errors.As(err, &ue) || !errors.Is(err, ErrInvalid) || u != nil {
				t.Fatalf("Parse(%q) = %v, %v: want only a *Error", in, u, err)
			}
			if ue.Offset < 0 || ue.Offset > len(ue.URI) || ue.Reason == "" {
				t.Fatalf("Parse(%q): offset %d outside %q, or no reason", in, ue.Offset, ue.URI)
			}
		} else {
			checkRoundTrip(t, u)
		}

		// Add a PIN to the query: whatever else is wrong, no error may show it.
		const pin = "Zq7PINv"
		sep := "?"
		if strings.Contains(in, "?") {
			sep = "&"
		}
		withPIN := in + sep + "pin-value=" + pin
		u, err = Parse(withPIN)
		switch {
		case err != nil && strings.Contains(err.Error(), pin):
			t.Fatalf("Parse(%q): the error shows the PIN: %v", withPIN, err)
		case err == nil && (u.PINValue != pin || strings.Contains(u.String(), pin)):
			t.Fatalf("Parse(%q): PINValue %q, String %q", withPIN, u.PINValue, u.String())
		}
	})
}

func ExampleParse() {
	u, err := Parse("pkcs11:token=Buypass%20ID;object=Authentication;type=private?pin-value=1234")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("token %q, key %q, PIN given: %v\n", u.Token, u.Object, u.HasPIN())
	fmt.Println(u)

	_, err = Parse("pkcs11:token=Buypass ID?pin-value=1234")
	fmt.Println(err)
	// Output:
	// token "Buypass ID", key "Authentication", PIN given: true
	// pkcs11:token=Buypass%20ID;object=Authentication;type=private
	// invalid PKCS #11 URI "pkcs11:token=Buypass ID?pin-value=REDACTED": attribute "token" at byte 20: a space is not allowed unescaped in the path; percent-encode it as %20
}

// A vendor attribute named like a PIN is refused without showing its value,
// and String never writes the value of one set by hand.
func TestVendorSecretNeverShown(t *testing.T) {
	const pin = "Zq7PINv"
	_, err := Parse("pkcs11:token=X;object=k?module-name=softhsm2&x-pin=" + pin)
	if !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), pin) || !strings.Contains(err.Error(), "x-pin") {
		t.Fatalf("Parse with x-pin = %v; want ErrInvalid naming x-pin, without the value", err)
	}
	u := &URI{Token: "X", Vendor: map[string]string{"x-password": pin}}
	if s := u.String(); strings.Contains(s, pin) || !strings.Contains(s, "x-password=REDACTED") {
		t.Fatalf("String = %q; want x-password=REDACTED", s)
	}
}
