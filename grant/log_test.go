package grant

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// Grants, tokens and pids never reach the log or errors.
func TestNoSecretsInLogsOrErrors(t *testing.T) {
	srv := newEmulator(t, nil)
	var buf bytes.Buffer
	cfg := testConfig(t, srv, 0)
	cfg.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	const pid = "01019012480"
	var msgs []string
	tok, err := cfg.Exchange(ctx, Request{Scopes: []string{"test:read"}, PID: pid})
	if err != nil {
		msgs = append(msgs, err.Error())
	}
	srv.FailNext(3, http.StatusServiceUnavailable)
	if _, err := cfg.Exchange(ctx, Request{Scopes: []string{"test:read"}, PID: pid}); err != nil {
		msgs = append(msgs, err.Error())
	}
	if _, err := cfg.Exchange(ctx, Request{Scopes: []string{"nope"}, PID: pid}); err != nil {
		msgs = append(msgs, err.Error())
	}
	if err := (Request{Scopes: []string{"a"}, PID: pid[:10] + "1"}).Validate(); err != nil {
		msgs = append(msgs, err.Error())
	}
	if tok != nil {
		if _, err := cfg.AltinnToken(ctx, tok.AccessToken); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if _, err := cfg.TokenSource(ctx, Request{Scopes: []string{"test:read"}}).Token(); err != nil {
		msgs = append(msgs, err.Error())
	}
	if buf.Len() == 0 {
		t.Fatal("nothing logged at debug")
	}
	all := buf.String() + strings.Join(msgs, "\n")
	for _, secret := range []string{"eyJ", pid, pid[:10]} {
		if strings.Contains(all, secret) {
			t.Errorf("%q found in logs or errors:\n%s", secret, all)
		}
	}
}
