package daemon_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/daemon/socket"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
)

// The daemon in a program: a key (here in memory; in production p11.Open
// of package signer/p11 on a smart card or HSM), a local Maskinporten
// emulator, and a unix socket that any OAuth 2 client can use as its token
// URL.
func ExampleNew() {
	// A key of organisation 910000004 with a certificate from a test root
	// (see newFileKey), and an emulator that trusts the root.
	sig, err := newFileKey()
	if err != nil {
		fmt.Println(err)
		return
	}
	emu := emulator.NewServer(emulator.Config{
		Roots:   []*x509.Certificate{shared.root},
		Clients: []emulator.Client{{ID: "my-client", OrgNumber: "910000004", Scopes: []string{"example:read"}}},
	})
	defer emu.Close()

	srv, err := daemon.New(daemon.Config{
		// With a card: func(context.Context) (signer.Signer, error) { return p11.Open(cfg) }
		OpenSigner: func(context.Context) (signer.Signer, error) { return sig, nil },
		Grant: grant.Config{ClientID: "my-client", Environment: grant.Environment{
			Issuer: emu.Issuer(), TokenEndpoint: emu.TokenURL()}},
		AllowedScopes: []string{"example:*"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	dir, _ := os.MkdirTemp("", "mphsm")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "mp-hsm.sock")
	ln, err := socket.Listen("unix:"+sock, socket.Options{}) // mode 0600
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx) // drains requests in flight
	}()

	// A caller: curl --unix-socket $sock -d grant_type=client_credentials -d scope=example:read http://mp-hsm/token
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"example:read"}}
	resp, err := client.PostForm("http://mp-hsm/token", form)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
		Scope       string `json:"scope"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	fmt.Println(resp.StatusCode, tok.TokenType, tok.Scope, tok.ExpiresIn > 100, strings.Count(tok.AccessToken, "."))
	// Output: 200 Bearer example:read true 2
}
