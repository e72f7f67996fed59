//go:build cgo

package daemon_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestUnknownSystemUserBlamesCaller: Maskinporten's refusal of a
// system_user_org that has no system user for the client (MP-303) is the
// caller's request, not the daemon's configuration: 400 invalid_request
// naming the parameter (on 20aa3dc, 502 server_error blaming the daemon's
// client id, key or environment).
func TestUnknownSystemUserBlamesCaller(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	wantToken(t, f.post(scopeForm("test:read", "system_user_org", sysUserOrg)))
	// 910000055: a valid organisation number that gave the test client no
	// system user.
	a := f.post(scopeForm("test:read", "system_user_org", "910000055"))
	wantError(t, a, http.StatusBadRequest, "invalid_request")
	for _, want := range []string{"MP-303", "system_user_org"} {
		if !strings.Contains(a.Description, want) {
			t.Errorf("description %q lacks %q", a.Description, want)
		}
	}
	if strings.Contains(a.Description, "the daemon's client id, key or environment") {
		t.Errorf("description blames the daemon: %q", a.Description)
	}
}

// TestWrongTCPSecretSaysSo: a TCP caller that sent HTTP Basic credentials
// is told that the id or secret is wrong, not that it must send them (on
// 20aa3dc: "callers on TCP must send a client's name and secret" in both
// cases).
func TestWrongTCPSecretSaysSo(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	u := f.tcp + "/token"
	a := postTo(t, f.client, u, scopeForm("test:read"), func(r *http.Request) { r.SetBasicAuth(testClient, testSecret+"x") })
	wantError(t, a, http.StatusUnauthorized, "invalid_client")
	if !strings.Contains(a.Description, "client id or secret is wrong") {
		t.Errorf("wrong secret: description %q does not say the id or secret is wrong", a.Description)
	}
	a = postTo(t, f.client, u, scopeForm("test:read"), nil)
	wantError(t, a, http.StatusUnauthorized, "invalid_client")
	if !strings.Contains(a.Description, "must send") {
		t.Errorf("no credentials: description %q does not say what to send", a.Description)
	}
}

// TestReloadNamesWhatChanged: a reload to another Maskinporten (a new
// well-known) empties the cache and says the environment changed, not the
// key (on 20aa3dc: "the key changed: cached tokens dropped").
func TestReloadNamesWhatChanged(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	wantToken(t, f.post(scopeForm("test:read")))
	cfg := f.cfg
	cfg.Grant.Environment = environment(newEmulator(t, 0))
	if err := f.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "the environment changed: cached tokens dropped") || strings.Contains(logs, "the key changed") {
		t.Errorf("the reload's log does not say the environment changed:\n%s", logs)
	}
}
