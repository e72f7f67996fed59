package grant_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
)

// exchanger fetches tokens for a cache entry with Config.Exchange, as the
// token daemon does for each distinct request.
type exchanger struct {
	cfg *grant.Config
	req grant.Request
}

func (x exchanger) Fetch(ctx context.Context, background bool) (*grant.Token, error) {
	return x.cfg.Exchange(ctx, x.req)
}

// A Cache used directly, under keys of one's own, with the tokens
// refreshed in the background ahead of expiry.
func ExampleCache_Add() {
	srv, sig := newExampleEmulator()
	defer srv.Close()
	cfg := &grant.Config{ClientID: "my-client", Signer: sig, KeyID: "my-kid",
		Environment: grant.Environment{Issuer: srv.Issuer(), TokenEndpoint: srv.TokenURL()}}

	cache := &grant.Cache{Background: true, RefreshJitter: 10 * time.Second}
	defer cache.Close() // stops the background refreshes

	e, err := cache.Add("example:read", exchanger{cfg, grant.Request{Scopes: []string{"example:read"}}})
	if err != nil {
		log.Fatal(err)
	}
	tok, hit, err := e.Token(context.Background(), grant.ForUse)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.TokenType, hit)

	// Later, on a hot path: find the entry and its token without allocating.
	if tok, ok := cache.Lookup([]byte("example:read")).Cached(grant.ForUse); ok {
		fmt.Println(tok.TokenType, "from the cache")
	}
	// Output:
	// Bearer false
	// Bearer from the cache
}
