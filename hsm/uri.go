package hsm

import (
	"errors"
	"fmt"
	"strings"
)

// URI is a parsed RFC 7512 PKCS #11 URI.
//
// String fields hold percent-decoded UTF-8 text, and "" means the attribute
// is absent. An attribute written with an empty value ("serial=") is also
// stored as "": the struct cannot tell the two apart, and an empty value
// selects nothing in particular. The same holds for ID, which is nil then.
type URI struct {
	// Path attributes select a library, slot, token and object.

	Token        string // token= : the token label (CK_TOKEN_INFO label)
	Manufacturer string // manufacturer= : the token's manufacturer ID
	Model        string // model= : the token model
	Serial       string // serial= : the token serial number

	SlotID           *uint  // slot-id= : the decimal CK_SLOT_ID; nil when absent
	SlotDescription  string // slot-description=
	SlotManufacturer string // slot-manufacturer=

	LibraryManufacturer string // library-manufacturer=
	LibraryDescription  string // library-description=
	LibraryVersion      string // library-version= : "M" or "M.N", as written

	// ID is id=, the object's CKA_ID: exactly the percent-decoded bytes.
	// "id=%01%02" is the two bytes 0x01 0x02 and "id=7370" is the four
	// bytes "7370"; the value is never read as hex or as text.
	ID     []byte
	Object string // object= : the object's CKA_LABEL
	// Type is type=: "private", "public", "cert", "secret-key" or "data".
	Type string

	// Query attributes say how to reach the token.

	ModuleName string // module-name= : a module name, as in "opensc-pkcs11"
	ModulePath string // module-path= : the module's file path
	PINSource  string // pin-source= : where to read the PIN, as given
	// PINValue is pin-value=, the PIN itself. String never writes it, and
	// errors from ParseURI never show it.
	PINValue string

	// Vendor holds the vendor attributes (names starting with "x-") from the
	// path and the query, keyed by their full name, values percent-decoded
	// and otherwise as given. It is nil when there are none.
	Vendor map[string]string

	// vendorQuery records which Vendor names came from the query, so that
	// String writes them back there; names not in it go to the path.
	vendorQuery map[string]bool
}

// ErrInvalidURI is matched, with errors.Is, by every error ParseURI returns.
var ErrInvalidURI = errors.New("invalid PKCS #11 URI")

// URIError reports why ParseURI refused a URI. errors.Is(err, ErrInvalidURI)
// is true for it.
type URIError struct {
	// URI is the input, with the value of any pin-value (and of any other
	// attribute whose name suggests a PIN or password) replaced by
	// "REDACTED".
	URI string
	// Attr names the attribute at fault, or is "" when the fault is not in
	// one (the scheme, a stray separator).
	Attr string
	// Offset is the byte offset of the fault in URI (the redacted form).
	Offset int
	// Reason says what is wrong and, where there is one, the fix.
	Reason string
}

// Error returns the reason with its place, and the redacted URI.
func (e *URIError) Error() string {
	where := fmt.Sprintf("at byte %d", e.Offset)
	if e.Attr != "" {
		where = fmt.Sprintf("attribute %q at byte %d", e.Attr, e.Offset)
	}
	return fmt.Sprintf("invalid PKCS #11 URI %q: %s: %s", e.URI, where, e.Reason)
}

// Is reports whether target is ErrInvalidURI.
func (e *URIError) Is(target error) bool { return target == ErrInvalidURI }

// The attribute names of RFC 7512, section 2.3, in the order String writes
// them.
var (
	uriPathNames = []string{
		"token", "manufacturer", "model", "serial",
		"slot-description", "slot-manufacturer", "slot-id",
		"library-manufacturer", "library-description", "library-version",
		"object", "type", "id",
	}
	uriQueryNames = []string{"module-name", "module-path", "pin-source", "pin-value"}
)

// uriTypes are the values of type=, with spellings people try instead.
var (
	uriTypes    = []string{"private", "public", "cert", "secret-key", "data"}
	uriTypeHint = map[string]string{
		"private-key": "private", "privkey": "private", "public-key": "public",
		"pubkey": "public", "certificate": "cert", "x509": "cert",
		"secret": "secret-key", "secretkey": "secret-key",
	}
)

// ParseURI parses a PKCS #11 URI as RFC 7512 defines it:
//
//	pkcs11:[path-attr *(";" path-attr)][?[query-attr *("&" query-attr)]]
//
// The scheme is case-insensitive; attribute names are not. Every attribute is
// name=value. The path attributes are
//
//	token, manufacturer, model, serial     token selection (CK_TOKEN_INFO)
//	slot-description, slot-manufacturer    slot selection (CK_SLOT_INFO)
//	slot-id                                a decimal CK_SLOT_ID, e.g. slot-id=0
//	library-manufacturer, library-description
//	library-version                        M or M.N, decimal, each at most 255
//	object                                 the CKA_LABEL
//	type                                   private, public, cert, secret-key or data
//	id                                     the CKA_ID bytes, e.g. id=%01%02
//
// and the query attributes are module-name, module-path, pin-source and
// pin-value. Vendor attributes are names starting with "x-" followed by
// letters, digits, '-' or '_'; they may appear in either part. (RFC 7512
// itself lets any other name made of those characters be a vendor attribute,
// and its own example uses vendor-aaa; ParseURI asks for "x-" so that a
// misspelt standard name, such as tokn, is reported instead of ignored.)
//
// ParseURI checks the grammar only. What the attributes mean is applied by
// URI.Selectors (every path attribute; vendor attributes are refused there)
// and URI.Module (module-name and module-path); pin-source and pin-value are
// for the caller. No attribute that parses is silently dropped.
//
// Values are percent-encoded UTF-8 ("%20" for a space), except id, whose
// value is raw bytes and best written fully encoded. Letters, digits and
// -._~:[]@!$'()*+,= may be written as they are in both parts; '&' may also be
// in the path, and '/', '?' and '|' in the query. Anything else, including
// ';', '%', '#' and spaces, must be percent-encoded. slot-id, library-version
// and type take plain text only.
//
// ParseURI refuses, with a *URIError: a missing scheme, an unknown attribute,
// an attribute in the wrong part, a path attribute or a standard query
// attribute given twice, a vendor attribute given twice, an empty attribute,
// bad percent-encoding, a character that needs percent-encoding, text that
// is not UTF-8, a malformed slot-id, library-version or type, and pin-value
// together with pin-source (RFC 7512 says such a URI SHOULD be refused).
// An attribute with an empty value counts as absent (see URI).
//
// Examples:
//
//	pkcs11:token=Buypass%20ID;object=Authentication;type=private
//	pkcs11:slot-id=0;id=%01%02?module-path=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so
//	pkcs11:token=HSM1;object=maskinporten-2025?pin-source=file:/run/secrets/hsm-pin
//	pkcs11:token=SoftHSM;object=k1;x-vendor-flag=1?module-name=softhsm2&pin-value=1234
func ParseURI(s string) (*URI, error) {
	p := uriParser{in: s, u: &URI{}, path: map[string]int{}, query: map[string]int{}}
	if err := p.parse(); err != nil {
		return nil, err
	}
	return p.u, nil
}

type uriParser struct {
	in          string
	u           *URI
	path, query map[string]int // attribute name -> offset where first seen
}

func (p *uriParser) fail(off int, attr, format string, args ...any) *URIError {
	red, mapOff := uriRedact(p.in)
	return &URIError{URI: red, Attr: attr, Offset: mapOff(off), Reason: fmt.Sprintf(format, args...)}
}

const uriScheme = "pkcs11:"

func (p *uriParser) parse() error {
	s := p.in
	if len(s) < len(uriScheme) || !strings.EqualFold(s[:len(uriScheme)], uriScheme) {
		hint := ""
		if t := strings.TrimSpace(s); t != s && len(t) >= len(uriScheme) && strings.EqualFold(t[:len(uriScheme)], uriScheme) {
			hint = "; remove the whitespace around it"
		}
		return p.fail(0, "", `a PKCS #11 URI starts with "pkcs11:", as in "pkcs11:token=mytoken;object=mykey"%s`, hint)
	}
	off := len(uriScheme)
	rest := s[off:]
	path, query, hasQuery := strings.Cut(rest, "?")
	if err := p.component(path, off, false); err != nil {
		return err
	}
	if hasQuery {
		if err := p.component(query, off+len(path)+1, true); err != nil {
			return err
		}
	}
	src, hasSrc := p.query["pin-source"]
	val, hasVal := p.query["pin-value"]
	if hasSrc && hasVal {
		attr, at := "pin-value", val
		if src > val {
			attr, at = "pin-source", src
		}
		return p.fail(at, attr, "pin-source and pin-value must not both be given (RFC 7512 says to refuse such a URI); "+
			"keep pin-source and remove pin-value")
	}
	return nil
}

// component parses the path (query false) or the query starting at byte off.
func (p *uriParser) component(c string, off int, query bool) error {
	if c == "" {
		return nil
	}
	sep := ";"
	if query {
		sep = "&"
	}
	for {
		attr, more, found := strings.Cut(c, sep)
		if err := p.attribute(attr, off, query); err != nil {
			return err
		}
		if !found {
			return nil
		}
		off += len(attr) + 1
		c = more
	}
}
