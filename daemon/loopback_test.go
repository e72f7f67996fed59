package daemon

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// loopbackAddrs are addresses a local program may send from: any of
// 127.0.0.0/8, ::1, and IPv4-mapped forms.
func loopbackAddrs(n int) []string {
	out := make([]string, 0, n)
	for i := range n {
		switch i % 3 {
		case 0:
			out = append(out, fmt.Sprintf("127.%d.%d.%d:%d", i/65536%256, i/256%256, i%256+1, 40000+i))
		case 1:
			out = append(out, fmt.Sprintf("[::1]:%d", 40000+i))
		default:
			out = append(out, fmt.Sprintf("[::ffff:127.0.%d.%d]:%d", i/256%256, i%256, 40000+i))
		}
	}
	return out
}

// TestLoopbackIsOneCallerForAuthFailures: guesses of the TCP secret from
// ever new loopback addresses are slowed as guesses from one address. On
// 20aa3dc each address was a caller of its own, so rotating through
// 127.0.0.0/8 skipped every delay (2,157 guesses/s).
func TestLoopbackIsOneCallerForAuthFailures(t *testing.T) {
	t.Parallel()
	f := newDefFixture(t, nil)
	clock := installFakeAuthClock(f.srv, true)
	for _, addr := range loopbackAddrs(12) {
		wantErrorAnswer(t, f.ask(tcpPeer(addr, wrongSecret), tokenForm("test:read")), http.StatusUnauthorized, errInvalidClient)
	}
	ms := time.Millisecond
	want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second, time.Second}
	if got := clock.asked(); !equalDurations(got, want) {
		t.Fatalf("delays asked for %v, want %v: loopback addresses are one caller", got, want)
	}
	lines := authLines(f.logs.String())
	if len(lines) != 1 || !strings.Contains(lines[0], `address="loopback TCP (127.0.0.0/8, ::1)" failures=1 `) {
		t.Fatalf("log lines %q, want one for loopback", lines)
	}
	// The right secret is still answered at once, from any of them.
	wantTokenAnswer(t, f.ask(tcpPeer("127.9.9.9:1", defSecret), tokenForm("test:read")))
	if got := clock.asked(); !equalDurations(got, want) {
		t.Fatalf("the right secret was delayed: %v", got)
	}
}

// TestLoopbackIsOneCallerForQuotas: distinct requests from ever new
// loopback addresses count against one caller's MaxKeysPerCaller, so the
// cache keeps room for a unix socket caller. On 20aa3dc four loopback
// addresses filled a 4-key cache and the unix caller got "cache full".
func TestLoopbackIsOneCallerForQuotas(t *testing.T) {
	t.Parallel()
	f := newDefFixture(t, func(c *Config) { c.MaxKeys = 4 }) // 2 per caller
	for i, addr := range loopbackAddrs(4) {
		a := f.ask(tcpPeer(addr, defSecret), tokenForm(fmt.Sprintf("test:s%d", i)))
		if i < 2 {
			wantTokenAnswer(t, a)
			continue
		}
		wantErrorAnswer(t, a, http.StatusServiceUnavailable, errTemporarilyUnavailable)
		if !strings.Contains(a.Description, "loopback TCP (127.0.0.0/8, ::1) has 2 distinct requests cached") {
			t.Fatalf("%s: description %q does not name the loopback caller", addr, a.Description)
		}
	}
	wantTokenAnswer(t, f.ask(unixPeer(1001), tokenForm("test:s5")))
	wantTokenAnswer(t, f.ask(unixPeer(1001), tokenForm("test:s6")))
}

// TestShortClientSecretRefused: a client secret under MinSecretLength
// bytes is refused by New and CheckClients (so at start and on reload),
// naming where it came from but not the secret. On 20aa3dc a 1-byte
// secret was accepted.
func TestShortClientSecretRefused(t *testing.T) {
	t.Parallel()
	short := strings.Repeat("k", MinSecretLength-1)
	f := newDefFixture(t, nil)
	cfg := f.srv.settings().cfg
	for name, modify := range map[string]func(*Config){
		"flat":   func(c *Config) { c.ClientSecret = "x" },
		"flat15": func(c *Config) { c.ClientSecret = short },
		"client": func(c *Config) {
			c.ClientSecret = ""
			c.Clients = []Client{{Name: "ledger", ClientID: defClient, Users: []string{"0"}, Secret: short}}
		},
	} {
		c := cfg
		modify(&c)
		if s, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: New: %v, want ErrConfig", name, err)
			if s != nil {
				s.Shutdown(t.Context())
			}
		}
		err := f.srv.Reload(c)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), fmt.Sprintf("at least %d", MinSecretLength)) {
			t.Errorf("%s: Reload: %v, want ErrConfig asking for %d bytes", name, err, MinSecretLength)
		}
		if err != nil && (strings.Contains(err.Error(), short) || strings.Contains(err.Error(), `"x"`)) {
			t.Errorf("%s: the error holds the secret: %v", name, err)
		}
	}
	err := CheckClients([]Client{{Name: "ledger", Users: []string{"0"}, Secret: short}})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), `client "ledger": the secret`) {
		t.Fatalf("CheckClients: %v, want ErrConfig naming the client's secret", err)
	}
	if err := CheckClients([]Client{{Name: "ledger", Users: []string{"0"}, Secret: short + "k"}}); err != nil {
		t.Fatalf("CheckClients with %d bytes: %v", MinSecretLength, err)
	}
	// The daemon keeps serving with its old configuration.
	wantTokenAnswer(t, f.ask(tcpPeer("127.0.0.1:1", defSecret), tokenForm("test:read")))
}
