//go:build cgo

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/internal/backends"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
)

// rpcDelay is the delay per message on the network HSM's link in
// BenchmarkTokenRPC: about one per PKCS#11 call.
const rpcDelay = 2 * time.Millisecond

// BenchmarkTokenRPC compares, over p11-kit's RPC with rpcDelay per round
// trip (a network HSM: SoftHSM2 with the e2e card behind `p11-kit server`,
// p11-kit-client.so in the client), a whole `mp-hsm token` process with
// internal/p11bare, a Go program that makes only the calls the job needs
// on the token's side (minimumCalls) and does no HTTP. mp-hsm gets the
// issuer and token endpoint as flags (no metadata request) and chooses the
// key by its own rules. The pairs run in turn in "interleaved", which
// reports ratio (mp-hsm's time ÷ the bare program's), the figure make
// bench holds to at most 1.1. It is skipped without p11-kit.
func BenchmarkTokenRPC(b *testing.B) {
	client, err := backends.P11KitClient()
	if err != nil {
		b.Skip(err)
	}
	fx := e2e(b)
	env := fx.envAlone(b, fx.card)
	var conf string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "SOFTHSM2_CONF="); ok {
			conf = v
		}
	}
	srv, err := backends.ServeP11KitRPC(b.TempDir(), fx.card.Module, "e2e-card", []string{"SOFTHSM2_CONF=" + conf})
	if err != nil {
		b.Skip(err)
	}
	b.Cleanup(func() {
		if err := srv.Close(); err != nil {
			b.Error(err)
		}
	})
	srv.SetDelay(rpcDelay)
	env = e2eSetenv(env, "SOFTHSM2_CONF", "MP_HSM_MODULE="+client, "P11_KIT_SERVER_ADDRESS="+srv.Address())
	cfg := fx.emulatorConfig(b)
	cfg.Logf = func(string, ...any) {}
	emu := emulator.NewTest(b, cfg)
	bin, bare := binary(b), bareBinary(b)
	args := []string{"token", "--token-label", "e2e-card", "--client-id", e2eClient, "--scope", e2eScopeRead,
		"--issuer", emu.Issuer(), "--token-endpoint", emu.TokenURL()}
	e2eAccessToken(b, emu, manualRun(b, env, bin, args...))
	mp := func() { manualRun(b, env, bin, args...) }
	min := func() { manualRun(b, env, bare, "-token-label", "e2e-card") }
	min()

	b.Run("mp-hsm", func(b *testing.B) {
		for b.Loop() {
			mp()
		}
	})
	b.Run("bare", func(b *testing.B) {
		for b.Loop() {
			min()
		}
	})
	b.Run("interleaved", func(b *testing.B) {
		var tm, tb time.Duration
		for b.Loop() {
			t0 := time.Now()
			mp()
			t1 := time.Now()
			min()
			tm, tb = tm+t1.Sub(t0), tb+time.Since(t1)
		}
		n := float64(b.N)
		b.ReportMetric(float64(tm)/float64(tb), "ratio")
		b.ReportMetric(tm.Seconds()*1e3/n, "mp-hsm-ms/op")
		b.ReportMetric(tb.Seconds()*1e3/n, "bare-ms/op")
	})
}

var bareBuilt struct {
	once      sync.Once
	dir, path string
	err       error
}

// bareBinary builds internal/p11bare once per process.
func bareBinary(t testing.TB) string {
	t.Helper()
	b := &bareBuilt
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "mp-hsm-p11bare-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "p11bare")
		cmd := testexec.Command(t, 5*time.Minute, "go", "build", "-o", b.path, "../../internal/p11bare")
		cmd.Env = os.Environ()
		if res := testexec.Run(t, cmd); res.Code != 0 {
			b.err = fmt.Errorf("go build internal/p11bare: exit %d\n%s", res.Code, res.Stderr)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}
