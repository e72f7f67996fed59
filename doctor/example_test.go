package doctor_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"log"

	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
)

// A server checks its setup at start with the key it has opened. With a
// key on a smart card, doctor/tokencheck's Checks as Config.Key also checks
// the module, token, PIN and login.
func ExampleRun() {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	srv := emulator.NewServer(emulator.Config{Clients: []emulator.Client{{ // Maskinporten in real use
		ID: "my-client", OrgNumber: "974760673", Scopes: []string{"example:read"},
		Keys: map[string]crypto.PublicKey{"my-kid": key.Public()},
	}}})
	defer srv.Close()
	s, err := signer.NewFileSigner(key, nil) // signer.Open in real use
	if err != nil {
		log.Fatal(err)
	}

	results := doctor.Run(context.Background(), doctor.Config{
		Signer:    s,
		KeyID:     "my-kid", // no certificate: a key registered on the client
		WellKnown: srv.MetadataURL(),
		ClientID:  "my-client",
		Request:   grant.Request{Scopes: []string{"example:read"}},
	})
	for _, r := range results {
		fmt.Println(r.Status, r.Check)
	}
	if f := results.FirstFailure(); f != nil {
		log.Fatalf("%s: %s (%s)", f.Check, f.Message, f.Hint)
	}
	// Output:
	// ok signature
	// ok certificate
	// skip validity
	// skip key-usage
	// skip issuer
	// skip org-number
	// ok environment
	// ok metadata
	// ok clock
	// ok token-request
}
