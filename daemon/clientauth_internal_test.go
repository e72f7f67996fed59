package daemon

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
)

// TestDecodedAndRaw: the candidates for a Basic credential.
func TestDecodedAndRaw(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"plain", []string{"plain"}},
		{"a+b", []string{"a b", "a+b"}},
		{"a%2Bb", []string{"a+b", "a%2Bb"}},
		{"a%zz", []string{"a%zz"}}, // does not decode: raw only
		{"100%", []string{"100%"}},
		{"", []string{""}},
	} {
		c := decodedAndRaw(tc.in)
		if got := c.list(); !slices.Equal(got, tc.want) {
			t.Errorf("decodedAndRaw(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestMapUpstreamRetryAfter: the 503 after Maskinporten's 5xx or 429
// carries Maskinporten's Retry-After, rounded up to seconds, or 5 s
// without one; its 403 is invalid_scope.
func TestMapUpstreamRetryAfter(t *testing.T) {
	s := &Server{}
	for _, tc := range []struct {
		status     int
		retryAfter time.Duration
		wantStatus int
		wantCode   string
		wantRA     int
	}{
		{503, 1500 * time.Millisecond, 503, errTemporarilyUnavailable, 2},
		{502, 3 * time.Minute, 503, errTemporarilyUnavailable, 180},
		{500, 0, 503, errTemporarilyUnavailable, 5},
		{429, 7 * time.Second, 503, errTemporarilyUnavailable, 7},
		{429, 0, 503, errTemporarilyUnavailable, 5},
		{403, 0, 400, errInvalidScope, 0},
	} {
		te := &grant.TokenError{URL: "https://test.maskinporten.no/token", StatusCode: tc.status, Code: "x", RetryAfter: tc.retryAfter, Attempts: 1}
		oe := s.mapError(fmt.Errorf("exchange: %w", te))
		if oe.status != tc.wantStatus || oe.code != tc.wantCode || oe.retryAfter != tc.wantRA {
			t.Errorf("HTTP %d, Retry-After %v: %d %s Retry-After %d, want %d %s %d",
				tc.status, tc.retryAfter, oe.status, oe.code, oe.retryAfter, tc.wantStatus, tc.wantCode, tc.wantRA)
		}
	}
}
