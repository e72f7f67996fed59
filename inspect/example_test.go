package inspect_test

import (
	"fmt"
	"log"
	"os"
	"time"

	"github.com/mp-hsm/mp-hsm/inspect"
)

func ExampleInspect() {
	// An access token as Maskinporten issues it (header.claims.signature,
	// the signature shortened here), as `mp-hsm token` prints it.
	token := "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1wLWtleSJ9." +
		"eyJjbGllbnRfaWQiOiJteS1jbGllbnQiLCJzY29wZSI6ImFsdGlubjpzZXJ2aWNlb3duZXIiLCJjb25zdW1lciI6eyJhdXRob3JpdHkiOiJpc282NTIzLWFjdG9yaWQtdXBpcyIsIklEIjoiMDE5Mjo5NzQ3NjA2NzMifSwiaWF0IjoxNzY3MjY4ODAwLCJleHAiOjE3NjcyNjg5MjAsInRva2VuX3R5cGUiOiJCZWFyZXIifQ." +
		"c2lnbmF0dXJl"
	now := time.Date(2026, 1, 1, 12, 1, 0, 0, time.UTC)
	rep, err := inspect.Inspect("Authorization: Bearer "+token, inspect.Options{Now: now})
	if err != nil {
		log.Fatal(err) // a *inspect.DecodeError, which never quotes the token
	}
	fmt.Println(rep.Kind, rep.AccessToken.ClientID, rep.AccessToken.ConsumerOrg, *rep.Expired)
	if err := rep.WriteText(os.Stdout); err != nil {
		log.Fatal(err)
	}
	// Output:
	// access_token my-client 974760673 false
	// Maskinporten access token
	// header
	//   alg  RS256
	//   kid  mp-key
	// claims
	//   client_id    my-client
	//   scope        altinn:serviceowner
	//   consumer     0192:974760673 (organisation number 974760673)
	//   token_type   Bearer
	//   iat          2026-01-01T12:00:00Z  (1 min ago)
	//   exp          2026-01-01T12:02:00Z  (in 1 min)
	//   (exp - iat)  120 s
	// signature      9 bytes, NOT verified
}
