package admin_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"golang.org/x/oauth2"

	"github.com/mp-hsm/mp-hsm/admin"
)

// TestRedirectNotFollowed: an API answer that redirects is not followed
// with the self-service token, which may change every client's keys: a
// redirect could send it in clear to an http URL of the same host, past
// CheckBaseURL. The 3xx is the API's error. Before, net/http's default
// client followed it and sent the token along.
func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	var leaked atomic.Value
	leaked.Store("")
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Store(r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"keys":[]}`))
	}))
	t.Cleanup(other.Close)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(api.Close)
	c := &admin.Client{BaseURL: api.URL + "/api/v1/", Read: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "self-service-token", TokenType: "Bearer"})}
	_, err := c.List(context.Background(), "some-client")
	if got := leaked.Load().(string); got != "" {
		t.Fatalf("the redirect was followed and the token sent along: %q", got)
	}
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusTemporaryRedirect {
		t.Fatalf("List: %v, want an *admin.APIError with status 307", err)
	}
}
