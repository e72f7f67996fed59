package daemon

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestErrorDescriptionCharset: error_description keeps to RFC 6749
// section 5.2's %x20-21 / %x23-5B / %x5D-7E whatever a description holds
// (descriptions quote callers' values: a scope with a quote, a resource
// with a backslash, control or non-ASCII characters); before, strconv.Quote
// put double quotes and backslashes in them.
func TestErrorDescriptionCharset(t *testing.T) {
	t.Parallel()
	w := httptest.NewRecorder()
	(&Server{}).writeError(w, badRequest(errInvalidScope, "the scope \"a\\\"b\" \x01\n\u00f8 is not allowed"))
	var got struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != http.StatusBadRequest {
		t.Fatalf("%d %q: %v", w.Code, w.Body, err)
	}
	if want := "the scope 'a/'b' ???? is not allowed"; got.Description != want {
		t.Errorf("error_description %q, want %q", got.Description, want)
	}
	for _, c := range []byte(got.Description) {
		if !(c == 0x20 || c == 0x21 || c >= 0x23 && c <= 0x5b || c >= 0x5d && c <= 0x7e) {
			t.Fatalf("error_description %q holds %q, outside RFC 6749 section 5.2", got.Description, c)
		}
	}
}
