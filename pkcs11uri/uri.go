// Package pkcs11uri parses and writes RFC 7512 PKCS #11 URIs, such as
//
//	pkcs11:token=Buypass%20ID;object=Authentication;type=private
//
// It is the grammar only, in pure Go (as smallstep's kms/uri), so that code
// which only reads or writes a URI does not depend on PKCS#11; package hsm
// applies what the attributes select (hsm.SelectorsFromURI, hsm.ModuleFromURI).
// Parse follows RFC 7512's percent-encoding only: it never guesses whether
// id=7370 is hex or text and resolves no environment variable. Neither
// Parse's errors nor String ever show a PIN.
package pkcs11uri

import (
	"errors"
	"fmt"
	"strings"
)

// URI is a parsed RFC 7512 PKCS #11 URI. String fields hold percent-decoded
// UTF-8 text; "" means absent, and an empty value ("serial=") is stored as
// absent too (ID is then nil), since it selects nothing.
type URI struct {
	// Path attributes select a library, slot, token and object.
	Token               string // token= : the token label (CK_TOKEN_INFO label)
	Manufacturer        string // manufacturer= : the token's manufacturer ID
	Model               string // model= : the token model
	Serial              string // serial= : the token serial number
	SlotID              *uint  // slot-id= : the decimal CK_SLOT_ID; nil when absent
	SlotDescription     string // slot-description=
	SlotManufacturer    string // slot-manufacturer=
	LibraryManufacturer string // library-manufacturer=
	LibraryDescription  string // library-description=
	LibraryVersion      string // library-version= : "M" or "M.N", as written
	ID                  []byte // id= : the object's CKA_ID, the percent-decoded bytes ("id=7370" is "7370", never hex)
	Object              string // object= : the object's CKA_LABEL
	Type                string // type= : "private", "public", "cert", "secret-key" or "data"

	// Query attributes say how to reach the token.
	ModuleName string // module-name= : a module name, as in "opensc-pkcs11"
	ModulePath string // module-path= : the module's file path
	PINSource  string // pin-source= : where to read the PIN, as given
	PINValue   string // pin-value= : the PIN itself; String never writes it, Parse's errors never show it

	Vendor      map[string]string // the "x-" attributes of both parts by full name, values decoded; nil for none
	vendorQuery map[string]bool   // the Vendor names read from the query, which String writes back there
}

// field returns the string field of the text attribute name, or nil.
func (u *URI) field(name string) *string {
	return map[string]*string{
		"token": &u.Token, "manufacturer": &u.Manufacturer, "model": &u.Model, "serial": &u.Serial,
		"slot-description": &u.SlotDescription, "slot-manufacturer": &u.SlotManufacturer,
		"library-manufacturer": &u.LibraryManufacturer, "library-description": &u.LibraryDescription,
		"library-version": &u.LibraryVersion, "object": &u.Object, "type": &u.Type,
		"module-name": &u.ModuleName, "module-path": &u.ModulePath, "pin-source": &u.PINSource,
		"pin-value": &u.PINValue,
	}[name]
}

// ErrInvalid is matched, with errors.Is, by every error Parse returns.
var ErrInvalid = errors.New("invalid PKCS #11 URI")

// Error reports why Parse refused a URI; it matches ErrInvalid.
type Error struct {
	URI    string // the input, the value of pin-value (or of any PIN- or password-like name) replaced by "REDACTED"
	Attr   string // the attribute at fault, or "" (the scheme, a stray separator)
	Offset int    // the byte offset of the fault in URI (the redacted form)
	Reason string // what is wrong and, where there is one, the fix
}

// Error returns the reason with its place, and the redacted URI.
func (e *Error) Error() string {
	where := fmt.Sprintf("at byte %d", e.Offset)
	if e.Attr != "" {
		where = fmt.Sprintf("attribute %q at byte %d", e.Attr, e.Offset)
	}
	return fmt.Sprintf("invalid PKCS #11 URI %q: %s: %s", e.URI, where, e.Reason)
}

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// The attribute names of RFC 7512, section 2.3, in the order String writes
// them; the values of type=, with spellings people try instead.
var (
	uriPathNames = []string{"token", "manufacturer", "model", "serial", "slot-description", "slot-manufacturer",
		"slot-id", "library-manufacturer", "library-description", "library-version", "object", "type", "id"}
	uriQueryNames = []string{"module-name", "module-path", "pin-source", "pin-value"}
	uriTypes      = []string{"private", "public", "cert", "secret-key", "data"}
	uriTypeHint   = map[string]string{
		"private-key": "private", "privkey": "private", "public-key": "public",
		"pubkey": "public", "certificate": "cert", "x509": "cert",
		"secret": "secret-key", "secretkey": "secret-key",
	}
)

// Parse parses a PKCS #11 URI as RFC 7512 defines it:
//
//	pkcs11:[path-attr *(";" path-attr)][?[query-attr *("&" query-attr)]]
//
// The scheme is case-insensitive; attribute names are not. The attributes are
// URI's fields (library-version's numbers at most 255). Vendor attributes
// ("x-" then letters, digits, '-' or '_') may be in either part: RFC 7512
// allows any name, but Parse asks for "x-" so that a misspelt name such as
// tokn is reported, not ignored. Nothing that parses is silently dropped.
//
// Values are percent-encoded UTF-8, except id (raw bytes). Letters, digits and
// -._~:[]@!$'()*+,= may stand as they are in both parts; '&' also in the path,
// and '/', '?' and '|' in the query; anything else (';', '%', '#', spaces)
// must be encoded. slot-id, library-version and type take plain text only.
//
// Anything else is refused with a *Error, as is an attribute given twice or
// pin-value beside pin-source (RFC 7512 says to refuse such a URI). Examples:
//
//	pkcs11:token=Buypass%20ID;object=Authentication;type=private
//	pkcs11:slot-id=0;id=%01%02?module-path=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so
//	pkcs11:token=HSM1;object=maskinporten-2025?pin-source=file:/run/secrets/hsm-pin
//	pkcs11:token=SoftHSM;object=k1;x-vendor-flag=1?module-name=softhsm2&pin-value=1234
func Parse(s string) (*URI, error) {
	p := uriParser{in: s, u: &URI{}, path: map[string]int{}, query: map[string]int{}}
	if !hasScheme(s) {
		hint := ""
		if t := strings.TrimSpace(s); t != s && hasScheme(t) {
			hint = "; remove the whitespace around it"
		}
		return nil, p.fail(0, "", `a PKCS #11 URI starts with "pkcs11:", as in "pkcs11:token=mytoken;object=mykey"%s`, hint)
	}
	path, query, hasQuery := strings.Cut(s[len(uriScheme):], "?")
	if err := p.component(path, len(uriScheme), false); err != nil {
		return nil, err
	}
	if hasQuery {
		if err := p.component(query, len(uriScheme)+len(path)+1, true); err != nil {
			return nil, err
		}
	}
	src, hasSrc := p.query["pin-source"]
	val, hasVal := p.query["pin-value"]
	if hasSrc && hasVal {
		attr, at := "pin-value", val
		if src > val {
			attr, at = "pin-source", src
		}
		return nil, p.fail(at, attr, "pin-source and pin-value must not both be given (RFC 7512 says to refuse such a URI); "+
			"keep pin-source and remove pin-value")
	}
	return p.u, nil
}

type uriParser struct {
	in          string
	u           *URI
	path, query map[string]int // attribute name -> offset where first seen
}

func (p *uriParser) fail(off int, attr, format string, args ...any) *Error {
	red, mapOff := uriRedact(p.in)
	return &Error{URI: red, Attr: attr, Offset: mapOff(off), Reason: fmt.Sprintf(format, args...)}
}

const uriScheme = "pkcs11:"

func hasScheme(s string) bool {
	return len(s) >= len(uriScheme) && strings.EqualFold(s[:len(uriScheme)], uriScheme)
}

// component parses the path (query false) or the query starting at byte off.
func (p *uriParser) component(c string, off int, query bool) error {
	if c == "" {
		return nil
	}
	sep := map[bool]string{false: ";", true: "&"}[query]
	for _, attr := range strings.Split(c, sep) {
		if err := p.attribute(attr, off, query); err != nil {
			return err
		}
		off += len(attr) + 1
	}
	return nil
}

// uriSecretName reports whether an attribute's value must not appear in an
// error: pin-value and, as people misspell it, any name with pin or pass.
func uriSecretName(name string) bool {
	n := strings.ToLower(strings.TrimSpace(name))
	return n != "pin-source" && (strings.Contains(n, "pin") || strings.Contains(n, "pass"))
}

const uriRedacted = "REDACTED"

// uriRedact replaces the value of the first secret attribute in s, and all
// that follows (a PIN may hold an unencoded '&' or ';'), with "REDACTED",
// reading s loosely to find it also in input Parse refuses; the function
// returned maps a byte offset in s to one in the redacted text.
func uriRedact(s string) (string, func(int) int) {
	for start := 0; start < len(s); {
		j := strings.IndexAny(s[start:], "=:;&?")
		if j < 0 {
			break
		}
		j += start
		if s[j] != '=' || !uriSecretName(s[start:j]) {
			start = j + 1
			continue
		}
		v := j + 1
		if v == len(s) {
			break
		}
		return s[:v] + uriRedacted, func(off int) int {
			if off >= len(s) {
				return v + len(uriRedacted)
			}
			return min(off, v)
		}
	}
	return s, func(off int) int { return off }
}
