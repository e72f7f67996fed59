//go:build cgo

package main

import (
	"strings"
	"testing"
)

// TestInspectMasksPID: a pid claim is shown as its first six digits unless
// --show-pid asks for it in full.
func TestInspectMasksPID(t *testing.T) {
	fx := e2e(t)
	srv := fx.emulator(t)
	pid := e2ePID(t)
	res := runCLI(t, fx.env(t, fx.card), "grant", "--token-label", "e2e-card", "--client-id", e2eClient,
		"--scope", e2eScopeRead, "--well-known", srv.MetadataURL(), "--pid", pid)
	if res.code != 0 {
		t.Fatalf("grant --pid: %v", res)
	}
	g := strings.TrimSpace(res.stdout)
	res = runCLI(t, nil, "inspect", g)
	if res.code != 0 || strings.Contains(res.stdout, pid) || !strings.Contains(res.stdout, pid[:6]+"*****") {
		t.Fatalf("inspect should show the pid masked: %v", res)
	}
	res = runCLI(t, nil, "inspect", "--show-pid", g)
	if res.code != 0 || !strings.Contains(res.stdout, pid) {
		t.Fatalf("inspect --show-pid should show the pid: %v", res)
	}
}
