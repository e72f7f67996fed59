package grant_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
)

// A consent token: the token carries a consent a person gave in Altinn 3
// (authorization_details of type urn:altinn:consent). The emulator knows
// the consent, as Altinn would.
func ExampleConsent() {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	const consentID = "77ed8698-e619-4066-9eb4-5c1eb3f165a1"
	const from = grant.PersonURNPrefix + "01019012480"
	srv := emulator.NewServer(emulator.Config{
		Clients: []emulator.Client{{
			ID: "my-client", OrgNumber: "974760673", Scopes: []string{"altinn:consentrequests.read"},
			Keys: map[string]crypto.PublicKey{"my-kid": key.Public()},
		}},
		Consents: []emulator.Consent{{ID: consentID, From: from, To: "974760673",
			ValidTo: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}},
	})
	defer srv.Close()
	sig, err := signer.NewFileSigner(key, nil) // a smart card signer in real use
	if err != nil {
		log.Fatal(err)
	}
	cfg := &grant.Config{ClientID: "my-client", Signer: sig, KeyID: "my-kid",
		Environment: grant.Environment{Issuer: srv.Issuer(), TokenEndpoint: srv.TokenURL()}}

	req := grant.Request{
		Scopes:  []string{"altinn:consentrequests.read"},
		Consent: grant.Consent{ID: consentID, From: from},
	}
	tok, err := cfg.TokenSource(context.Background(), req).Token()
	if err != nil {
		log.Fatal(err)
	}
	// The API provider reads (and verifies) the consent in the token.
	var claims struct {
		Details []struct {
			ID      string            `json:"id"`
			To      map[string]string `json:"to"`
			ValidTo string            `json:"validTo"`
		} `json:"authorization_details"`
		jwt.RegisteredClaims
	}
	if _, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken, &claims); err != nil {
		log.Fatal(err)
	}
	d := claims.Details[0]
	fmt.Println(d.ID, d.To["ID"], d.ValidTo)

	// A malformed consent is refused before anything is signed, and the
	// identity number is masked in the error.
	req.Consent.From = grant.PersonURNPrefix + "01019012481"
	err = req.Validate()
	fmt.Println(errors.Is(err, grant.ErrInvalidRequest), err)
	// Output:
	// 77ed8698-e619-4066-9eb4-5c1eb3f165a1 0192:974760673 2030-01-01T00:00:00+00:00
	// true grant: invalid consent_from "urn:altinn:person:identifier-no:010190*****": not a valid national identity number (11 digits with two modulus-11 check digits)
}
