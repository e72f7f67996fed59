package daemon

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/mp-hsm/mp-hsm/grant"
)

// splitList splits an element of a list option (AllowedScopes,
// AllowedResources) at spaces and commas.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' })
}

// checkList checks a list option of Config or a Client: a list that is
// given but, once split, holds no entry ([], ",", " ") is refused rather
// than read as "no list", which would allow everything; each entry must
// pass valid. A Config list is given when it has elements (the zero value
// is the documented default), a Client's when it is not nil.
func checkList(field string, list []string, given bool, valid func(string) bool, want string) error {
	if !given {
		return nil
	}
	n := 0
	for _, a := range list {
		for _, v := range splitList(a) {
			n++
			if !valid(v) {
				return fmt.Errorf("%w: %s: %q is not %s", ErrConfig, field, v, want)
			}
		}
	}
	if n == 0 {
		return fmt.Errorf("%w: %s is given but holds no entry (only spaces or commas); leave it out to allow any value, or name the values to allow", ErrConfig, field)
	}
	return nil
}

// validScopeEntry reports whether v may be an entry of AllowedScopes: a
// scope, a scope prefix followed by '*', or '*'.
func validScopeEntry(v string) bool {
	return v == "*" || grant.ValidScope(strings.TrimSuffix(v, "*"))
}

// validResourceEntry reports whether v may be an entry of
// AllowedResources: an absolute URI, such a URI's beginning (at least its
// scheme) followed by '*', or '*'.
func validResourceEntry(v string) bool {
	if v == "*" {
		return true
	}
	v = strings.TrimSuffix(v, "*")
	if !grant.ValidScope(v) { // printable ASCII, no space, quote or backslash
		return false
	}
	u, err := url.Parse(v)
	return err == nil && u.Scheme != ""
}

// listPolicy decides which values (scopes, or resources) callers may ask
// for.
type listPolicy struct {
	exact    map[string]bool
	prefixes []string
	any      bool
}

// newListPolicy returns the policy of an allow-list, checked by checkList:
// an entry ending in '*' allows every value with that prefix, "*" allows
// any, and an empty list allows any.
func newListPolicy(allowed []string) *listPolicy {
	p := &listPolicy{exact: map[string]bool{}}
	n := 0
	for _, a := range allowed {
		for _, s := range splitList(a) {
			n++
			switch {
			case s == "*":
				p.any = true
			case strings.HasSuffix(s, "*"):
				p.prefixes = append(p.prefixes, strings.TrimSuffix(s, "*"))
			default:
				p.exact[s] = true
			}
		}
	}
	if n == 0 {
		p.any = true
	}
	return p
}

func (p *listPolicy) allows(v string) bool {
	if p.any || p.exact[v] {
		return true
	}
	for _, pre := range p.prefixes {
		if strings.HasPrefix(v, pre) {
			return true
		}
	}
	return false
}

// finite reports whether p allows a fixed set of values: exact ones only.
func (p *listPolicy) finite() bool { return !p.any && len(p.prefixes) == 0 }
