package inspect_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/inspect"
)

// b64url encodes s as a JWT part.
func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// readJWT reads testdata/name.jwt.
func readJWT(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".jwt"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDecodeErrors: each malformed input gives a *DecodeError that names
// the part at fault and says what is wrong, without quoting the input.
func TestDecodeErrors(t *testing.T) {
	hdr := b64url(`{"alg":"RS256"}`)
	claims := b64url(`{"iss":"x","exp":1}`)
	const secretish = "c2VjcmV0LXNpZ25hdHVyZS10aGF0LW11c3Qtbm90LWxlYWs"
	for _, tc := range []struct {
		name  string
		input string
		part  int
		want  string
	}{
		{"empty", "", 0, "no JWT given"},
		{"blank", "  ", 0, "no JWT given"},
		{"one part", secretish, 0, "found no dot"},
		{"two parts", hdr + "." + secretish, 0, "found 2 parts"},
		{"four parts", hdr + "." + claims + "." + secretish + ".x", 0, "found 4 parts"},
		{"JWE", strings.Repeat(secretish+".", 4) + secretish, 0, "encrypted JWT (JWE)"},
		{"not base64url", hdr + "." + claims + "!." + secretish, 2, "part 2 (the claims) is not base64url: character '!' at byte"},
		{"standard base64", hdr + "+." + claims + "." + secretish, 1, "standard base64, not base64url"},
		{"header not JSON", b64url("not json") + "." + claims + "." + secretish, 1, "part 1 (the header) is not JSON"},
		{"claims an array", hdr + "." + b64url("[1,2]") + "." + secretish, 2, "part 2 (the claims) is JSON but not an object"},
		{"claims cut short", hdr + "." + b64url(`{"iss":"x"`) + "." + secretish, 2, "part 2 (the claims) is not JSON: it ends too early"},
		{"trailing data", hdr + "." + b64url(`{}{}`) + "." + secretish, 2, "has more after its JSON object"},
		{"empty header", "." + claims + "." + secretish, 1, "part 1 (the header) is empty"},
		{"bad signature", hdr + "." + claims + ".a*b" + secretish, 3, "part 3 (the signature) is not base64url"},
		{"space inside", hdr + ". " + claims + "." + secretish, 0, "white space at byte"},
		{"JSON without token", `{"token_type":"Bearer","secret":"` + secretish + `"}`, 0, "JSON without access_token"},
		{"JSON not a token response", `{"access_token":` + secretish, 0, "not a token response"},
		{"empty access_token", `{"access_token":" "}`, 0, "access_token is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, err := inspect.Decode(tc.input)
			var de *inspect.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode = %v, %v; want a *DecodeError", j, err)
			}
			if de.Part != tc.part {
				t.Errorf("Part %d, want %d (%v)", de.Part, tc.part, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secretish) || strings.Contains(err.Error(), claims) {
				t.Errorf("the error echoes the input: %v", err)
			}
		})
	}
}

// TestDecodeCauses: the error keeps the decoder's own error for callers
// that want it.
func TestDecodeCauses(t *testing.T) {
	hdr := b64url(`{"alg":"RS256"}`)
	_, err := inspect.Decode(hdr + "." + b64url(`{"iss":1}`) + "!.sig")
	var ce base64.CorruptInputError
	if !errors.As(err, &ce) {
		t.Errorf("Decode(bad base64) = %v; want a base64.CorruptInputError inside", err)
	}
	_, err = inspect.Decode(hdr + "." + b64url(`{"iss":}`) + ".sig")
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		t.Errorf("Decode(bad JSON) = %v; want a *json.SyntaxError inside", err)
	}
}

// TestDecodeForms: the JWT alone, an Authorization header and a token
// response all decode to the same JWT.
func TestDecodeForms(t *testing.T) {
	jwt := strings.TrimSpace(readJWT(t, "access_token"))
	resp, err := json.Marshal(map[string]any{"access_token": jwt, "token_type": "Bearer", "expires_in": 120})
	if err != nil {
		t.Fatal(err)
	}
	want, err := inspect.Decode(jwt)
	if err != nil {
		t.Fatal(err)
	}
	if want.SignatureLen != 256 || want.Header["alg"] != "RS256" || want.Claims["client_id"] != "inspect-test-client" {
		t.Errorf("Decode: header %v, claims %v, signature %d bytes", want.Header, want.Claims, want.SignatureLen)
	}
	for name, input := range map[string]string{
		"padded":         "\n  " + jwt + " \n",
		"bearer":         "Bearer " + jwt,
		"header":         "Authorization: Bearer " + jwt + "\n",
		"lower case":     "authorization: bearer " + jwt,
		"token response": string(resp),
	} {
		got, err := inspect.Decode(input)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got.Claims["jti"] != want.Claims["jti"] || got.SignatureLen != want.SignatureLen {
			t.Errorf("%s: claims %v, signature %d", name, got.Claims, got.SignatureLen)
		}
	}
}
