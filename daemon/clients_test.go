package daemon_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/grant"
)

// lockedBuffer is an audit log's writer that tests read.
type lockedBuffer struct{ logBuffer }

// TestClientsChosenAndAdmitted serves three clients from one daemon to
// this process's uid and gid over the unix socket and to TCP callers with
// a client's secret: the caller names a client or gets the only one it is
// admitted to; anything else is refused, saying why, before anything is
// signed; every answer is one audit line without a token or secret.
func TestClientsChosenAndAdmitted(t *testing.T) {
	t.Parallel()
	uid, gid := strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
	var audit lockedBuffer
	const otherSecret = "other+s3cret%-long"
	f := newFixture(t, options{modify: func(c *daemon.Config) {
		c.ClientSecret = ""
		c.Grant.ClientID = ""
		c.Audit = daemon.NewAuditLog(&audit)
		c.Clients = []daemon.Client{
			{Name: "mine", ClientID: testClient, Scopes: []string{"test:read"}, Users: []string{uid}},
			{Name: "other", ClientID: testClient, Users: []string{"65534"}, Secret: otherSecret},
			{Name: "also", ClientID: testClient, Scopes: []string{"test:write"}, Groups: []string{gid}},
		}
	}})
	named := func(name, scope string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "scope": {scope}, "client_id": {name}}
	}
	cases := []struct {
		what   string
		a      tokenAnswer
		status int
		code   string
		desc   string
	}{
		{"naming none, admitted to two", f.post(scopeForm("test:read")), 400, "invalid_request", "admitted to several clients (mine, also)"},
		{"naming mine", f.post(named("mine", "test:read")), 200, "", ""},
		{"naming also", f.post(named("also", "test:write")), 200, "", ""},
		{"naming mine again", f.post(named("mine", "test:read")), 200, "", ""},
		{"naming other", f.post(named("other", "test:read")), 401, "invalid_client", "is not admitted to the client 'other'"},
		{"naming no such client", f.post(named("nosuch", "test:read")), 401, "invalid_client", "no client 'nosuch'"},
		{"a scope outside mine's", f.post(named("mine", "test:write")), 400, "invalid_scope", "not allowed for the client 'mine'"},
		{"TCP with other's secret", postTo(t, f.client, f.tcp+"/token", scopeForm("test:read"), func(r *http.Request) {
			r.SetBasicAuth("other", url.QueryEscape(otherSecret))
		}), 200, "", ""},
		{"TCP as mine with other's secret", postTo(t, f.client, f.tcp+"/token", scopeForm("test:read"), func(r *http.Request) {
			r.SetBasicAuth("mine", url.QueryEscape(otherSecret))
		}), 401, "invalid_client", "client authentication failed"},
	}
	for _, c := range cases {
		if c.a.Status != c.status || c.a.Error != c.code || !strings.Contains(c.a.Description, c.desc) {
			t.Errorf("%s: %s; want %d %s %q", c.what, describe(c.a), c.status, c.code, c.desc)
		}
	}
	// Group membership counts from a new login: the refusal says so.
	if d := cases[4].a.Description; !strings.Contains(d, "next login: `id` shows the groups") {
		t.Errorf("naming other: %q does not say that a new group needs a new login", d)
	}
	if n := f.emu.Stats().TokenRequests; n != 3 {
		t.Errorf("Maskinporten was asked %d times; want 3 (mine, also, TCP other; the refusals never reach it)", n)
	}

	type line struct {
		Peer     map[string]any `json:"peer"`
		Client   string         `json:"client"`
		ClientID string         `json:"client_id"`
		Outcome  string         `json:"outcome"`
		Status   int            `json:"status"`
		Error    string         `json:"error"`
	}
	raw := audit.String()
	var lines []line
	for _, l := range strings.Split(strings.TrimSuffix(raw, "\n"), "\n") {
		var v line
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		lines = append(lines, v)
	}
	// The refusal of a client that does not exist comes within a minute
	// of the caller's refusal for "other": it is summarized, not written
	// (see TestUnadmittedRefusalsSummarized).
	written := []int{0, 1, 2, 3, 4, 6, 7, 8}
	outcomes := []string{"refused", "issued", "issued", "cached", "refused", "refused", "issued", "refused"}
	clients := []string{"", "mine", "also", "mine", "other", "mine", "other", ""}
	if len(lines) != len(outcomes) {
		t.Fatalf("%d audit lines; want %d:\n%s", len(lines), len(outcomes), raw)
	}
	for i, l := range lines {
		c := cases[written[i]]
		if l.Outcome != outcomes[i] || l.Client != clients[i] || l.Status != c.status || l.Error != c.code {
			t.Errorf("audit line %d (%s): %+v; want outcome %s, client %q", i+1, c.what, l, outcomes[i], clients[i])
		}
		if i < 6 && (l.Peer["uid"] != float64(os.Getuid()) || l.Peer["pid"] != float64(os.Getpid())) {
			t.Errorf("audit line %d: peer %v; want this process", i+1, l.Peer)
		}
		if i >= 6 && !strings.HasPrefix(l.Peer["address"].(string), "127.0.0.1:") {
			t.Errorf("audit line %d: peer %v; want a TCP address", i+1, l.Peer)
		}
	}
	for _, c := range cases {
		if c.a.AccessToken != "" && strings.Contains(raw, c.a.AccessToken) {
			t.Fatal("the audit log holds an access token")
		}
	}
	if strings.Contains(raw, otherSecret) || strings.Contains(raw, url.QueryEscape(otherSecret)) {
		t.Fatal("the audit log holds the secret")
	}
}

// TestAuditMasksPID checks that an audit line holds the pid claim masked,
// as the logs do, and never in clear, refused or not.
func TestAuditMasksPID(t *testing.T) {
	t.Parallel()
	var audit lockedBuffer
	f := newFixture(t, options{noTCP: true, modify: func(c *daemon.Config) { c.Audit = daemon.NewAuditLog(&audit) }})
	const pid = "12345678901"
	f.post(scopeForm("test:read", "pid", pid))
	f.post(url.Values{"grant_type": {"password"}, "scope": {"test:read"}, "pid": {pid}, "client_secret": {"guess-s3cret"}})
	raw := audit.String()
	if strings.Count(raw, "\n") != 2 || strings.Count(raw, `"pid":"123456*****"`) != 2 {
		t.Errorf("audit:\n%s\nwant two lines with the pid masked", raw)
	}
	if strings.Contains(raw, pid) || strings.Contains(raw, "guess-s3cret") {
		t.Errorf("audit holds the pid in clear or a secret:\n%s", raw)
	}
}

// TestClientsRefusedConfig checks that New names the client and field of a
// mistake in Clients.
func TestClientsRefusedConfig(t *testing.T) {
	t.Parallel()
	setup(t)
	base := func(clients ...daemon.Client) daemon.Config {
		return daemon.Config{OpenSigner: sharedOpener(t), Clients: clients}
	}
	for _, tc := range []struct {
		cfg  daemon.Config
		want string
	}{
		{base(daemon.Client{Name: "a", Users: []string{"0"}}, daemon.Client{Name: "a", Groups: []string{"0"}}), `client "a": the name is used by another client`},
		{base(daemon.Client{Name: "a"}), `client "a" admits nobody`},
		{base(daemon.Client{Name: "a b", Users: []string{"0"}}), `client "a b": name must be`},
		{base(daemon.Client{Name: "a", Users: []string{"no-such-user-here"}}), `client "a": users: no user "no-such-user-here"`},
		{base(daemon.Client{Name: "a", Groups: []string{"no-such-group-here"}}), `client "a": groups: no group "no-such-group-here"`},
		{base(daemon.Client{Name: "a", Users: []string{"0"}, Scopes: []string{","}}), `client "a": scopes is given but holds no entry`},
		// An empty list never widens anything (issue 19, defect 2).
		{base(daemon.Client{Name: "a", Users: []string{"0"}, Scopes: []string{}}), `client "a": scopes is given but holds no entry`},
		{base(daemon.Client{Name: "a", Users: []string{}, Secret: "sixteen-or-more-bytes"}), `client "a": users is given but holds no entry`},
		{base(daemon.Client{Name: "a", Users: []string{"0"}, Groups: []string{}}), `client "a": groups is given but holds no entry`},
		// The flat fields are one client, checked by the same rules.
		{daemon.Config{OpenSigner: sharedOpener(t), Grant: grant.Config{ClientID: "a b"}}, `the client (ClientID, Grant.ClientID): name must be`},
		{daemon.Config{OpenSigner: sharedOpener(t), Grant: grant.Config{ClientID: "ok"}, AllowedScopes: []string{"test:*", "bad\"scope"}}, "AllowedScopes: "},
		{func() daemon.Config {
			c := base(daemon.Client{Name: "a", Users: []string{"0"}})
			c.ClientSecret = "x"
			return c
		}(), "ClientID and ClientSecret are for a daemon without Clients"},
	} {
		_, err := daemon.New(tc.cfg)
		if !errors.Is(err, daemon.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v; want ErrConfig saying %q", err, tc.want)
		}
	}
}

// TestReloadClients applies new clients with Reload, and keeps the running
// ones when the new ones are refused.
func TestReloadClients(t *testing.T) {
	t.Parallel()
	uid := strconv.Itoa(os.Getuid())
	f := newFixture(t, options{noTCP: true, modify: func(c *daemon.Config) {
		c.ClientSecret, c.Grant.ClientID = "", ""
		c.Clients = []daemon.Client{{Name: "mine", ClientID: testClient, Users: []string{uid}}}
	}})
	wantToken(t, f.post(scopeForm("test:read")))
	cfg := f.cfg
	cfg.Clients = []daemon.Client{
		{Name: "mine", ClientID: testClient, Users: []string{"65534"}},
		{Name: "next", ClientID: testClient, Users: []string{uid}},
	}
	if err := f.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	wantError(t, f.post(url.Values{"grant_type": {"client_credentials"}, "scope": {"test:read"}, "client_id": {"mine"}}), 401, "invalid_client")
	wantToken(t, f.post(scopeForm("test:read"))) // next, the only one left
	bad := cfg
	bad.Clients = []daemon.Client{{Name: "mine", ClientID: testClient, Users: []string{"no-such-user-here"}}}
	if err := f.srv.Reload(bad); !errors.Is(err, daemon.ErrConfig) {
		t.Fatalf("Reload with an unknown user: %v; want ErrConfig", err)
	}
	wantToken(t, f.post(scopeForm("test:read"))) // still next
}
