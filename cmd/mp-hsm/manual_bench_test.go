//go:build cgo

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
)

// BenchmarkTokenVsManual compares, in one run, a whole `mp-hsm token`
// process with the same job done by hand in bench/manual.sh (pkcs11-tool
// reads the certificates and signs, openssl encodes, curl posts): the same
// SoftHSM2 token and key, the same PIN file, the same emulator, issuer and
// token endpoint (no metadata document for either), one access token each.
// It is skipped when pkcs11-tool, openssl or curl is missing.
func BenchmarkTokenVsManual(b *testing.B) {
	for _, tool := range []string{"pkcs11-tool", "openssl", "curl", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("the by-hand baseline needs %s", tool)
		}
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "bench", "manual.sh"))
	if err != nil {
		b.Fatal(err)
	}
	fx := e2e(b)
	cfg := fx.emulatorConfig(b)
	cfg.Logf = func(string, ...any) {}
	emu := emulator.NewTest(b, cfg)
	pinFile := filepath.Join(b.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(sentinelPIN+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	env := e2eSetenv(fx.env(b, fx.card), "MP_HSM_PIN", "MP_HSM_PIN_FILE="+pinFile)
	bin := binary(b)

	b.Run("mp-hsm", func(b *testing.B) {
		args := []string{"token", "--token-label", "e2e-card", "--key-id", "01", "--client-id", e2eClient, "--scope", e2eScopeRead,
			"--issuer", emu.Issuer(), "--token-endpoint", emu.TokenURL()}
		e2eAccessToken(b, emu, manualRun(b, env, bin, args...))
		for b.Loop() {
			manualRun(b, env, bin, args...)
		}
	})
	b.Run("manual", func(b *testing.B) {
		senv := e2eSetenv(env, "MP_HSM_TOKEN_LABEL=e2e-card", "KEY_ID=01", "MP_HSM_CLIENT_ID="+e2eClient,
			"ISSUER="+emu.Issuer(), "TOKEN_ENDPOINT="+emu.TokenURL(), "SCOPE="+e2eScopeRead)
		e2eAccessToken(b, emu, manualRun(b, senv, script))
		for b.Loop() {
			manualRun(b, senv, script)
		}
	})
}

// manualRun runs name with args in env (beside PATH, HOME and TMPDIR) and
// returns its stdout; it fails b unless it exits 0 with output.
func manualRun(b testing.TB, env []string, name string, args ...string) string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "TMPDIR=" + os.TempDir()}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stdout.Len() == 0 {
		b.Fatalf("%s: %v\nstderr: %s", filepath.Base(name), err, stderr.String())
	}
	return stdout.String()
}
