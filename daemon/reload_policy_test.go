package daemon_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/daemon/socket"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/grant"
)

// TestReloadChecksWhatStartChecks: Serve and Reload judge a configuration
// by the same rules against the same listeners. A daemon without Clients
// is refused on a unix socket every local user can reach (mode 0666), at
// Serve and at Reload; a Reload that drops the clients (defect 1 of issue
// 19: every local uid got any scope), gives a client an empty list of
// scopes or users (defect 2: "any scope"), or leaves the TCP listener
// without a secret, is refused with ErrConfig, and the running clients
// keep deciding.
func TestReloadChecksWhatStartChecks(t *testing.T) {
	t.Parallel()
	emu := newEmulator(t, 0)
	var logs logBuffer
	uid := strconv.Itoa(os.Getuid())
	flat := daemon.Config{
		OpenSigner: sharedOpener(t),
		Grant:      grant.Config{ClientID: testClient, Environment: environment(emu)},
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	}
	withClients := flat
	withClients.Grant.ClientID = ""
	withClients.Clients = []daemon.Client{{Name: "mine", ClientID: testClient, Scopes: []string{"test:read"}, Users: []string{uid}, Secret: testSecret}}
	open := socket.Options{SocketMode: 0o666}

	// Start: no clients on a socket for everyone is refused by Serve.
	srv, err := daemon.New(flat)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := socket.Listen("unix:"+socketPath(t), open)
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan error, 1)
	go func() { refused <- srv.Serve(ln) }()
	select {
	case err := <-refused:
		if !errors.Is(err, daemon.ErrConfig) || !strings.Contains(err.Error(), "mode 0666) lets every local user connect") {
			t.Errorf("Serve of a daemon without clients on a 0666 socket: %v; want ErrConfig", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Serve of a daemon without clients on a 0666 socket: serving; want ErrConfig")
	}
	shutdown(t, srv)

	srv, err = daemon.New(withClients)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, srv) })
	sock := socketPath(t)
	if ln, err = socket.Listen("unix:"+sock, open); err != nil {
		t.Fatal(err)
	}
	tl, err := socket.Listen("tcp:127.0.0.1:0", socket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ln) }()
	go func() { served <- srv.Serve(tl) }()
	uc := unixClient(sock)
	t.Cleanup(uc.CloseIdleConnections)
	post := func(kv ...string) tokenAnswer {
		return postTo(t, uc, "http://mp-hsm/token", scopeForm("test:read", kv...), nil)
	}
	deadline := time.Now().Add(10 * time.Second)
	for a := post(); a.Status != http.StatusOK; a = post() {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon with clients does not serve: %+v\n%s", a, &logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	// Answered on TCP too: both listeners are Serve's now.
	wantToken(t, postTo(t, hc, "http://"+tl.Addr().String()+"/token", scopeForm("test:read"), func(r *http.Request) { r.SetBasicAuth("mine", testSecret) }))

	emptyScopes, emptyUsers, noSecret := withClients, withClients, withClients
	emptyScopes.Clients = []daemon.Client{{Name: "mine", ClientID: testClient, Scopes: []string{}, Users: []string{uid}, Secret: testSecret}}
	emptyUsers.Clients = []daemon.Client{{Name: "mine", ClientID: testClient, Users: []string{}, Groups: []string{strconv.Itoa(os.Getgid())}, Secret: testSecret}}
	noSecret.Clients = []daemon.Client{{Name: "mine", ClientID: testClient, Scopes: []string{"test:read"}, Users: []string{uid}}}
	flatWithSecret := flat
	flatWithSecret.ClientSecret = testSecret
	for _, tc := range []struct {
		what string
		cfg  daemon.Config
		says string
	}{
		{"the clients dropped, on a 0666 socket", flatWithSecret, "(mode 0666) lets every local user connect, and without clients"},
		{"a client with scopes = []", emptyScopes, `client "mine": scopes is given but holds no entry`},
		{"a client with users = []", emptyUsers, `client "mine": users is given but holds no entry`},
		{"no secret for the TCP listener", noSecret, "TCP listener"},
	} {
		if err := srv.Reload(tc.cfg); !errors.Is(err, daemon.ErrConfig) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Reload with %s: %v; want ErrConfig saying %q", tc.what, err, tc.says)
		}
		// The running clients still decide: a name no client has is
		// refused, a scope outside mine's too, and mine is served.
		wantError(t, post("client_id", "nosuch"), http.StatusUnauthorized, "invalid_client")
		wantError(t, postTo(t, uc, "http://mp-hsm/token", scopeForm("test:write"), nil), http.StatusBadRequest, "invalid_scope")
		wantToken(t, post())
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned: %v", err)
	default:
	}
}

func shutdown(t *testing.T, srv *daemon.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
