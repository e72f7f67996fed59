// Package inspect decodes a JWT, such as a Maskinporten grant or access
// token, into a Report for people and scripts: header, claims, times relative
// to now, the x5c certificates and an access token's client and scope.
// Nothing is verified, so a Report may show forgeries. Errors and the text
// form never quote the input, which may be a live token; a pid is masked
// unless Options.ShowPID.
package inspect

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// JWT is a compact JWS taken apart, nothing verified.
type JWT struct {
	Header       map[string]any // numbers are json.Number
	Claims       map[string]any // numbers are json.Number
	SignatureLen int            // 0 for an unsigned JWT
}

// DecodeError is why Decode could not take its input apart, never quoting it.
type DecodeError struct {
	Part int   // 1 the header, 2 the claims, 3 the signature, 0 the whole input
	Err  error // the decoder's error (*json.SyntaxError, base64.CorruptInputError), or nil
	msg  string
}

// Error returns the one-line message.
func (e *DecodeError) Error() string { return e.msg }

// Unwrap returns Err.
func (e *DecodeError) Unwrap() error { return e.Err }

func decodeErr(part int, cause error, format string, args ...any) *DecodeError {
	return &DecodeError{Part: part, Err: cause, msg: fmt.Sprintf(format, args...)}
}

// Decode takes a compact JWS apart, given alone, after "Authorization:
// Bearer" or in a token response. Every error is a *DecodeError.
func Decode(input string) (*JWT, error) {
	s, err := extract(input)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(s, ".")
	switch n := len(parts); {
	case n == 5:
		return nil, decodeErr(0, nil, "not a signed JWT: 5 dot-separated parts make an encrypted JWT (JWE), which cannot be decoded without its key")
	case n == 1:
		return nil, decodeErr(0, nil, "not a JWT: want three base64url parts separated by dots (header.claims.signature), found no dot")
	case n != 3:
		return nil, decodeErr(0, nil, "not a JWT: want three base64url parts separated by dots (header.claims.signature), found %d parts", n)
	}
	j := &JWT{}
	if j.Header, err = decodePart(parts[0], 1, "part 1 (the header)"); err != nil {
		return nil, err
	}
	if j.Claims, err = decodePart(parts[1], 2, "part 2 (the claims)"); err != nil {
		return nil, err
	}
	sig, err := base64URL(parts[2], 3, "part 3 (the signature)")
	if err != nil {
		return nil, err
	}
	j.SignatureLen = len(sig)
	return j, nil
}

// extract trims input and removes an "Authorization: Bearer" prefix, or
// takes access_token out of a token response.
func extract(input string) (string, error) {
	s := strings.TrimSpace(input)
	if s == "" {
		return "", decodeErr(0, nil, "no JWT given: pass it as the argument, or on stdin (mp-hsm inspect -)")
	}
	for _, prefix := range []string{"authorization:", "bearer "} {
		if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
			s = strings.TrimSpace(s[len(prefix):])
		}
	}
	if strings.HasPrefix(s, "{") {
		var resp struct {
			AccessToken *string `json:"access_token"`
		}
		if err := json.Unmarshal([]byte(s), &resp); err != nil {
			return "", decodeErr(0, err, "the input starts with '{' but is not a token response (JSON with access_token): %s", jsonProblem(err))
		}
		if resp.AccessToken == nil {
			return "", decodeErr(0, nil, "the input is JSON without access_token: give the JWT itself, or a token response")
		}
		s = strings.TrimSpace(*resp.AccessToken)
		if s == "" {
			return "", decodeErr(0, nil, "the token response's access_token is empty")
		}
	}
	if i := strings.IndexFunc(s, unicode.IsSpace); i >= 0 {
		return "", decodeErr(0, nil, "not a JWT: it holds white space at byte %d; a JWT is one word of base64url parts separated by dots", i)
	}
	return s, nil
}

// base64URL decodes base64url, tolerating padding; the error names the part without quoting it.
func base64URL(part string, index int, name string) ([]byte, error) {
	fail := func(cause error, format string, args ...any) ([]byte, error) {
		return nil, decodeErr(index, cause, "%s is not base64url: "+format, append([]any{name}, args...)...)
	}
	if i := strings.IndexAny(part, "+/"); i >= 0 {
		return fail(nil, "%q at byte %d is standard base64, not base64url (which has '-' and '_')", part[i], i)
	}
	trimmed := strings.TrimRight(part, "=")
	b, err := base64.RawURLEncoding.DecodeString(trimmed)
	var ce base64.CorruptInputError
	switch {
	case err == nil:
		return b, nil
	case !errors.As(err, &ce):
		return fail(err, "%v", err)
	case int(ce) < len(part) && part[ce] >= 0x21 && part[ce] < 0x7f:
		return fail(err, "character %q at byte %d is not base64url", part[ce], int64(ce))
	case int(ce) >= len(trimmed):
		return fail(err, "its length is impossible for base64url (cut short?)")
	}
	return fail(err, "byte %d is not base64url", int64(ce))
}

// decodePart decodes one base64url part holding a JSON object.
func decodePart(part string, index int, name string) (map[string]any, error) {
	if part == "" {
		return nil, decodeErr(index, nil, "%s is empty", name)
	}
	raw, err := base64URL(part, index, name)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, decodeErr(index, err, "%s is not JSON: %s", name, jsonProblem(err))
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, decodeErr(index, nil, "%s is JSON but not an object", name)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, decodeErr(index, nil, "%s has more after its JSON object", name)
	}
	return m, nil
}

// jsonProblem describes a JSON decoding error without quoting the input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%s (at byte %d)", strings.TrimPrefix(se.Error(), "json: "), se.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "it ends too early"
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s where %s was expected", te.Value, te.Type)
	}
	return "invalid JSON"
}
