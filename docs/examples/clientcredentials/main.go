// Command clientcredentials gets a Maskinporten token from mp-hsm serve with
// golang.org/x/oauth2/clientcredentials, the daemon's /token as TokenURL,
// and calls an API with it. The library caches the token and asks the
// daemon again shortly before it expires; the daemon answers from its own
// cache, refreshed in the background.
//
// Over the unix socket (no secret; the socket's mode decides who may
// connect):
//
//	go run ./docs/examples/clientcredentials -socket $XDG_RUNTIME_DIR/mp-hsm.sock -scope altinn:serviceowner
//
// Over loopback TCP, with the daemon's client id and the secret from its
// --client-secret-file:
//
//	MP_HSM_CLIENT_SECRET=... go run ./docs/examples/clientcredentials -token-url http://127.0.0.1:8400/token -client-id my-client -scope altinn:serviceowner
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

func main() {
	socket := flag.String("socket", "", "the daemon's unix socket (instead of -token-url)")
	tokenURL := flag.String("token-url", "http://127.0.0.1:8400/token", "the daemon's token endpoint over TCP")
	clientID := flag.String("client-id", "", "client id for TCP (the daemon's --client-id)")
	scope := flag.String("scope", "", "scopes, separated by spaces")
	consumerOrg := flag.String("consumer-org", "", "optional consumer_org")
	api := flag.String("api", "", "optional API URL to GET with the token")
	flag.Parse()
	if *scope == "" {
		log.Fatal("give -scope")
	}

	cfg := clientcredentials.Config{
		ClientID:     *clientID,
		ClientSecret: os.Getenv("MP_HSM_CLIENT_SECRET"),
		TokenURL:     *tokenURL,
		Scopes:       strings.Fields(*scope),
		AuthStyle:    oauth2.AuthStyleInHeader, // HTTP Basic, as the daemon wants on TCP
	}
	if *consumerOrg != "" {
		cfg.EndpointParams = url.Values{"consumer_org": {*consumerOrg}}
	}

	ctx := context.Background()
	if *socket != "" {
		// Every request to the token URL goes to the unix socket; the host
		// name in the URL is not used.
		cfg.TokenURL = "http://mp-hsm/token"
		sock := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", *socket)
			},
		}}
		ctx = context.WithValue(ctx, oauth2.HTTPClient, sock)
	}

	// The token source caches the token; ctx (with the socket client)
	// is used for the token requests only.
	ts := cfg.TokenSource(ctx)
	tok, err := ts.Token()
	if err != nil {
		log.Fatal(err) // an *oauth2.RetrieveError carries the daemon's OAuth 2 error
	}
	fmt.Printf("got a %s token, valid until %s\n", tok.TokenType, tok.Expiry.Format(time.RFC3339))

	if *api == "" {
		return
	}
	// The client sends the token and gets a new one when it expires; its
	// own requests use the default transport, not the socket.
	resp, err := oauth2.NewClient(context.Background(), ts).Get(*api)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	fmt.Printf("%s: %s\n", resp.Status, body)
}
