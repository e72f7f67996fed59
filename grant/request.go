package grant

import (
	"cmp"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Grant lifetimes: the time between a grant's iat and exp claims.
const (
	DefaultLifetime = 60 * time.Second
	MinLifetime     = 1 * time.Second
	MaxLifetime     = 120 * time.Second // Maskinporten's documented limit
)

// Request is the claims of a grant that vary from one token to another.
// Scopes is required.
type Request struct {
	// Scopes are RFC 6749 scope tokens (case-sensitive); an element may hold
	// several separated by spaces. Order is kept, duplicates are dropped.
	Scopes []string
	// Resources restrict the token's audience (claim "resource", absolute URIs).
	Resources []string
	// ConsumerOrg is the organisation number of the organisation that
	// delegated the scopes in Altinn (claim "consumer_org"); not with OnBehalfOf.
	ConsumerOrg string
	// OnBehalfOf is the legacy "iss_onbehalfof" claim; prefer ConsumerOrg.
	OnBehalfOf string
	// PID is an 11-digit personal identification number (claim "pid"),
	// never written in clear to errors or logs.
	PID string
	// SystemUserOrg is the organisation number of the customer whose Altinn
	// system user the token is for (a SystemUserType authorization detail).
	SystemUserOrg string
	// Consent, if not zero, asks for a consent token (a ConsentType detail).
	Consent Consent
	// AuthorizationDetails is an RFC 9396 JSON array, checked by
	// ParseAuthorizationDetails, whose elements are sent after the system
	// user's and the consent's.
	AuthorizationDetails json.RawMessage
	// Lifetime is the grant's exp - iat, MinLifetime to MaxLifetime in whole
	// seconds; if zero, DefaultLifetime. The token's lifetime is the client's.
	Lifetime time.Duration
}

// Validate reports the first problem that would make Maskinporten refuse the
// request as a *ValidationError.
func (r Request) Validate() error {
	_, err := r.normalize()
	return err
}

// normRequest is a validated Request in the form the grant uses.
type normRequest struct {
	scopes       []string        // deduplicated, in the order given
	scope        string          // the scope claim: scopes joined by spaces
	resources    []string        // deduplicated, in the order given
	authzDetails json.RawMessage // the claim: system user, consent, then AuthorizationDetails
	lifetime     int64           // seconds
	Request
}

func (r Request) normalize() (*normRequest, error) {
	n := &normRequest{Request: r}
	for _, v := range r.Scopes {
		for s := range strings.SplitSeq(v, " ") {
			if s == "" {
				continue
			}
			if !ValidScope(s) {
				return nil, &ValidationError{Field: "scope", Value: s, Reason: "a scope may not hold whitespace, control characters, '\"', '\\' or non-ASCII characters"}
			}
			if !slices.Contains(n.scopes, s) {
				n.scopes = append(n.scopes, s)
			}
		}
	}
	if len(n.scopes) == 0 {
		return nil, &ValidationError{Field: "scope", Reason: "at least one scope is required"}
	}
	n.scope = strings.Join(n.scopes, " ")
	for _, res := range r.Resources {
		if u, err := url.Parse(res); !ValidScope(res) || err != nil || u.Scheme == "" {
			return nil, &ValidationError{Field: "resource", Value: res, Reason: "must be an absolute URI without whitespace or control characters"}
		}
		if !slices.Contains(n.resources, res) {
			n.resources = append(n.resources, res)
		}
	}
	if r.ConsumerOrg != "" && !ValidOrgNumber(r.ConsumerOrg) {
		return nil, &ValidationError{Field: "consumer_org", Value: r.ConsumerOrg, Reason: badOrgNumber}
	}
	if r.OnBehalfOf != "" {
		if len(r.OnBehalfOf) > 255 || !ValidScope(r.OnBehalfOf) {
			return nil, &ValidationError{Field: "iss_onbehalfof", Value: r.OnBehalfOf, Reason: "must be 1 to 255 printable ASCII characters without spaces"}
		}
		if r.ConsumerOrg != "" {
			return nil, &ValidationError{Field: "iss_onbehalfof", Value: r.OnBehalfOf, Reason: "may not be combined with consumer_org"}
		}
	}
	if r.PID != "" && !ValidPID(r.PID) {
		return nil, &ValidationError{Field: "pid", Value: MaskPID(r.PID), Reason: "not a valid personal identification number (11 digits with two check digits)"}
	}
	if r.SystemUserOrg != "" && !ValidOrgNumber(r.SystemUserOrg) {
		return nil, &ValidationError{Field: "systemuser_org", Value: r.SystemUserOrg, Reason: badOrgNumber}
	}
	if err := n.authorizationDetails(r); err != nil {
		return nil, err
	}
	lt := cmp.Or(r.Lifetime, DefaultLifetime)
	if lt < MinLifetime || lt > MaxLifetime {
		return nil, &ValidationError{Field: "lifetime", Value: r.Lifetime.String(), Reason: "must be from 1s to 120s"}
	}
	n.lifetime = int64(lt / time.Second)
	return n, nil
}

// authorizationDetails builds the claim from the system user, the consent and
// the caller's own elements.
func (n *normRequest) authorizationDetails(r Request) error {
	if err := r.Consent.Validate(); err != nil {
		return err
	}
	var elems []json.RawMessage
	if r.SystemUserOrg != "" {
		elems = append(elems, systemUserDetail(r.SystemUserOrg))
	}
	if r.Consent != (Consent{}) {
		elems = append(elems, r.Consent.detail())
	}
	if len(r.AuthorizationDetails) > 0 {
		given, err := ParseAuthorizationDetails(r.AuthorizationDetails)
		if err != nil {
			return err
		}
		for _, d := range given {
			elems = append(elems, d.raw)
		}
	}
	if len(elems) > 0 {
		n.authzDetails, _ = json.Marshal(elems) // compacts each element
	}
	return nil
}

// ValidScope reports whether s is one RFC 6749 scope-token: printable ASCII
// without space, '"' or '\', such as "altinn:serviceowner".
func ValidScope(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(c rune) bool { return c < 0x21 || c > 0x7e || c == '"' || c == '\\' })
}

const badOrgNumber = "not a valid organisation number (9 digits with a modulus-11 check digit)"

// ValidOrgNumber reports whether s is a Norwegian organisation number: nine
// digits, the last a modulus-11 check digit.
func ValidOrgNumber(s string) bool {
	return len(s) == 9 && allDigits(s) && mod11(s[:8], []int{3, 2, 7, 6, 5, 4, 3, 2}) == int(s[8]-'0')
}

// ValidPID reports whether s is a Norwegian personal identification number
// (fødselsnummer, D-number or synthetic): eleven digits, the last two
// modulus-11 check digits; the date is not checked.
func ValidPID(s string) bool {
	return len(s) == 11 && allDigits(s) && mod11(s[:9], []int{3, 7, 6, 1, 8, 9, 4, 5, 2}) == int(s[9]-'0') &&
		mod11(s[:10], []int{5, 4, 3, 2, 7, 6, 5, 4, 3, 2}) == int(s[10]-'0')
}

// MaskPID returns s with every character after the sixth replaced by '*'.
func MaskPID(s string) string {
	if len(s) <= 6 {
		return strings.Repeat("*", len(s))
	}
	return s[:6] + strings.Repeat("*", len(s)-6)
}

// mod11 returns the modulus-11 check digit of digits, or -1 if none exists.
func mod11(digits string, weights []int) int {
	sum := 0
	for i := range len(digits) {
		sum += int(digits[i]-'0') * weights[i]
	}
	if c := (11 - sum%11) % 11; c != 10 {
		return c
	}
	return -1
}

func allDigits(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool { return c < '0' || c > '9' })
}
