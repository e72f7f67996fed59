package daemon

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/daemon/socket"
)

// TestCallerIsPeerUID: over a real unix socket, a caller is the uid the
// kernel reports for the peer (SO_PEERCRED, read once per connection): the
// per-caller bound names it.
func TestCallerIsPeerUID(t *testing.T) {
	t.Parallel()
	f := newDefFixture(t, func(c *Config) { c.MaxKeysPerCaller = 1 })
	dir, err := os.MkdirTemp("", "mphsm") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "d.sock")
	ln, err := socket.Listen("unix:"+sock, socket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	go f.srv.Serve(ln)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	t.Cleanup(client.CloseIdleConnections)
	post := func(scope string) defAnswer {
		resp, err := client.PostForm("http://mp-hsm/token", tokenForm(scope))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		a := defAnswer{Status: resp.StatusCode}
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	wantTokenAnswer(t, post("test:s0"))
	a := post("test:s1")
	wantErrorAnswer(t, a, http.StatusServiceUnavailable, errTemporarilyUnavailable)
	if want := "uid " + strconv.Itoa(os.Getuid()) + " has 1 distinct requests cached"; !strings.Contains(a.Description, want) {
		t.Fatalf("description %q, want %q", a.Description, want)
	}
}

// TestAddressOf: TCP callers are their IPv4 address, or their IPv6 /64
// (a host has a whole /64 to choose addresses from).
func TestAddressOf(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"192.0.2.7:4000":                 "192.0.2.7",
		"[::ffff:192.0.2.7]:4000":        "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:443":     "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1%eth0]:80": "2001:db8:1:2::/64",
		"[::1]:8400":                     "loopback TCP (127.0.0.0/8, ::1)",
		"127.3.4.5:9":                    "loopback TCP (127.0.0.0/8, ::1)",
		"[::ffff:127.0.0.2]:9":           "loopback TCP (127.0.0.0/8, ::1)",
		"nonsense":                       "unknown address",
	} {
		if got := (callerID{uid: -1, ip: addressOf(in)}).String(); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}
