package grant

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestValidOrgNumber(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"974760673", true},
		{"910000004", true},
		{"974760674", false}, // wrong check digit
		{"97476067", false},
		{"9747606731", false},
		{"97476067a", false},
		{"", false},
		{" 974760673", false},
	} {
		if got := ValidOrgNumber(tc.in); got != tc.want {
			t.Errorf("ValidOrgNumber(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestValidPID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"01019012480", true},
		{"15058012359", true},
		{"01019012481", false}, // second check digit wrong
		{"01019012470", false}, // first check digit wrong
		{"0101901248", false},
		{"0101901248x", false},
		{"", false},
	} {
		if got := ValidPID(tc.in); got != tc.want {
			t.Errorf("ValidPID(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestMaskPID(t *testing.T) {
	if got, want := MaskPID("01019012480"), "010190*****"; got != want {
		t.Errorf("MaskPID = %q, want %q", got, want)
	}
	if got := MaskPID("0101"); got != "****" {
		t.Errorf("MaskPID(short) = %q", got)
	}
}

func TestRequestNormalize(t *testing.T) {
	r := Request{
		Scopes:    []string{"b:two a:one", "a:one", "  c:three  "},
		Resources: []string{"https://api.example.no/", "https://api.example.no/"},
	}
	n, err := r.normalize()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"b:two", "a:one", "c:three"}; !slices.Equal(n.scopes, want) {
		t.Errorf("scopes = %q, want %q", n.scopes, want)
	}
	if n.scope != "b:two a:one c:three" {
		t.Errorf("scope claim = %q", n.scope)
	}
	if len(n.resources) != 1 {
		t.Errorf("resources = %q, want one", n.resources)
	}
	if n.lifetime != 60 {
		t.Errorf("default lifetime = %d, want 60", n.lifetime)
	}
}

// invalidPID must never appear in clear in an error.
const invalidPID = "01019012481"

// invalidRequests are requests Validate refuses, with the field it names.
var invalidRequests = []struct {
	name  string
	req   Request
	field string
}{
	{"no scopes", Request{}, "scope"},
	{"only spaces", Request{Scopes: []string{"  ", ""}}, "scope"},
	{"tab in scope", Request{Scopes: []string{"a\tb"}}, "scope"},
	{"newline in scope", Request{Scopes: []string{"a\nb"}}, "scope"},
	{"control char in scope", Request{Scopes: []string{"a\x01b"}}, "scope"},
	{"non-ASCII scope", Request{Scopes: []string{"skatt:årsregnskap"}}, "scope"},
	{"quote in scope", Request{Scopes: []string{`a"b`}}, "scope"},
	{"relative resource", Request{Scopes: []string{"a"}, Resources: []string{"api/x"}}, "resource"},
	{"resource with space", Request{Scopes: []string{"a"}, Resources: []string{"https://x/ y"}}, "resource"},
	{"consumer_org check digit", Request{Scopes: []string{"a"}, ConsumerOrg: "974760674"}, "consumer_org"},
	{"consumer_org length", Request{Scopes: []string{"a"}, ConsumerOrg: "97476067"}, "consumer_org"},
	{"consumer_org and onbehalfof", Request{Scopes: []string{"a"}, ConsumerOrg: "974760673", OnBehalfOf: "kunde1"}, "iss_onbehalfof"},
	{"onbehalfof with space", Request{Scopes: []string{"a"}, OnBehalfOf: "kunde 1"}, "iss_onbehalfof"},
	{"pid check digit", Request{Scopes: []string{"a"}, PID: invalidPID}, "pid"},
	{"pid length", Request{Scopes: []string{"a"}, PID: "0101901248"}, "pid"},
	{"system user org", Request{Scopes: []string{"a"}, SystemUserOrg: "123456789"}, "systemuser_org"},
	{"lifetime too long", Request{Scopes: []string{"a"}, Lifetime: 121 * time.Second}, "lifetime"},
	{"lifetime too short", Request{Scopes: []string{"a"}, Lifetime: 500 * time.Millisecond}, "lifetime"},
	{"lifetime negative", Request{Scopes: []string{"a"}, Lifetime: -time.Second}, "lifetime"},
}

func TestRequestValidate(t *testing.T) {
	for _, tc := range invalidRequests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.req.Validate()
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("Validate() = %v, want ErrInvalidRequest", err)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %T, want *ValidationError", err)
			}
			if ve.Field != tc.field {
				t.Errorf("Field = %q, want %q", ve.Field, tc.field)
			}
			if strings.Contains(err.Error(), invalidPID) || strings.Contains(ve.Value, invalidPID) {
				t.Errorf("error shows the pid in clear: %v", err)
			}
		})
	}
}

func TestRequestValidateAccepts(t *testing.T) {
	for _, r := range []Request{
		{Scopes: []string{"test:read"}},
		{Scopes: []string{"a b c"}, Lifetime: 120 * time.Second},
		{Scopes: []string{"a"}, Lifetime: time.Second},
		{Scopes: []string{"a"}, ConsumerOrg: "974760673", PID: "01019012480", Resources: []string{"urn:altinn:x", "https://api.example.no"}},
		{Scopes: []string{"a"}, OnBehalfOf: "kunde1", SystemUserOrg: "910000004"},
	} {
		if err := r.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", r, err)
		}
	}
}
