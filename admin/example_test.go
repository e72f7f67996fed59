package admin_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"fmt"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
)

// The self-service client's tokens come from grant; here it signs kid
// grants with a software key against the emulator, in real use x5c grants
// with the enterprise certificate on the token.
func ExampleClient_Add() {
	adminKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	appKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv := emulator.NewServer(emulator.Config{
		AdminClient: "admin",
		Clients: []emulator.Client{
			{ID: "admin", OrgNumber: "910000001", Scopes: []string{admin.ScopeRead, admin.ScopeWrite},
				Keys: map[string]crypto.PublicKey{"admin-key": adminKey.Public()}},
			{ID: "app", OrgNumber: "910000001"},
		},
	})
	defer srv.Close()

	s, _ := signer.NewFileSigner(adminKey, nil)
	cfg := &grant.Config{ClientID: "admin", Signer: s, KeyID: "admin-key",
		Environment: grant.Environment{Issuer: srv.Issuer(), TokenEndpoint: srv.TokenURL()}}
	ctx := context.Background()
	api := &admin.Client{
		BaseURL: srv.AdminAPIURL(),
		Read:    cfg.TokenSource(ctx, grant.Request{Scopes: []string{admin.ScopeRead}}),
		Write:   cfg.TokenSource(ctx, grant.Request{Scopes: []string{admin.ScopeWrite}}),
	}

	j, _ := signer.PublicJWK(appKey.Public(), "", "app-2026")
	keys, _ := admin.ParseKeys(mustJSON(j))
	set, err := api.Add(ctx, "app", keys...)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, k := range set.Keys {
		fmt.Println(k.Kid, k.Kty, k.Bits, k.Use)
	}
	// Output:
	// app-2026 RSA 2048 sig
}
