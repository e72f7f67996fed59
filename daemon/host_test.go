package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/daemon/socket"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

// TestHostChecked: on TCP only Host values that name the daemon are
// answered (localhost, loopback addresses, the listen address, and
// AllowedHosts), on every path; any other name, as a browser sends it
// after DNS rebinding, gets 421 with a body that says why, and reveals
// nothing. On 20aa3dc /metrics answered any Host (client names, counts).
// The unix socket is not checked, and its metadata still follows Host.
func TestHostChecked(t *testing.T) {
	t.Parallel()
	f := newDefFixture(t, func(c *Config) { c.AllowedHosts = []string{"mp-hsm.internal, tokens.example.no"} })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go f.srv.Serve(ln)
	port := ln.Addr().(*net.TCPAddr).Port
	base := "http://" + ln.Addr().String()
	get := func(t *testing.T, client *http.Client, url, host string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tcp := &http.Client{}
	t.Cleanup(tcp.CloseIdleConnections)
	p := ":" + strconv.Itoa(port)
	for _, host := range []string{"localhost" + p, "LOCALHOST.", "127.0.0.1" + p, "127.0.0.1", "[::1]" + p, "[::1]", "mp-hsm.internal" + p, "Tokens.Example.NO"} {
		if code, body := get(t, tcp, base+"/metrics", host); code != http.StatusOK || !strings.Contains(body, "mphsm_ready") {
			t.Errorf("Host %q: /metrics %d, want 200", host, code)
		}
	}
	for _, host := range []string{"evil.example" + p, "evil.example", "localhost.evil.example" + p, "127.0.0.1.nip.io" + p, "192.0.2.1" + p, "mp-hsm.internal.evil" + p} {
		for _, path := range []string{"/metrics", "/healthz", "/readyz", "/.well-known/oauth-authorization-server", "/token"} {
			code, body := get(t, tcp, base+path, host)
			if code != http.StatusMisdirectedRequest || !strings.Contains(body, "the Host header does not name this daemon") {
				t.Errorf("Host %q: %s %d %q, want 421 saying why", host, path, code, excerpt(body))
			}
			if strings.Contains(body, "mphsm_") || strings.Contains(body, defClient) {
				t.Errorf("Host %q: %s revealed %q", host, path, excerpt(body))
			}
		}
	}
	// The unix socket: not checked; the metadata's issuer follows Host.
	dir, err := os.MkdirTemp("", "mphsm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "d.sock")
	uln, err := socket.Listen("unix:"+sock, socket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	go f.srv.Serve(uln)
	unix := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	t.Cleanup(unix.CloseIdleConnections)
	code, body := get(t, unix, "http://mp-hsm"+"/.well-known/oauth-authorization-server", "my-daemon.example")
	var m struct{ Issuer string }
	if code != http.StatusOK || json.Unmarshal([]byte(body), &m) != nil || m.Issuer != "http://my-daemon.example" {
		t.Fatalf("unix socket metadata: %d %s, want the issuer from Host", code, body)
	}
}

// TestAllowedHostsChecked: an entry with a port, a wildcard or nothing
// but separators is refused at start.
func TestAllowedHostsChecked(t *testing.T) {
	t.Parallel()
	for _, hosts := range [][]string{{"host:8400"}, {"*.example"}, {" , "}, {"a/b"}} {
		cfg := Config{OpenSigner: func(context.Context) (signer.Signer, error) { return nil, nil }, Grant: grant.Config{ClientID: "x"}, AllowedHosts: hosts}
		if _, err := cfg.withDefaults(); !errors.Is(err, ErrConfig) {
			t.Errorf("AllowedHosts %q: %v, want ErrConfig", hosts, err)
		}
	}
}
