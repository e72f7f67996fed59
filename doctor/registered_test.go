package doctor_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
)

// TestRunRegisteredKey looks the kid up through the emulated self-service
// API, as the self-service client "admin" with the leaf's x5c.
func TestRunRegisteredKey(t *testing.T) {
	_, _, leafKey, _ := keys(t)
	pki := newPKI(t, "Buypass Class 3 Test4 CA G2 HT Business")
	s, err := signer.NewFileSigner(leafKey, []*x509.Certificate{pki.leaf(t, leafKey.Public(), leafOpts{}), pki.inter})
	if err != nil {
		t.Fatal(err)
	}
	srv := emulator.NewTest(t, emulator.Config{
		Roots:       []*x509.Certificate{pki.root},
		AdminClient: "admin",
		Clients: []emulator.Client{
			{ID: testClient, OrgNumber: testOrg, Scopes: []string{testScope}, Keys: map[string]crypto.PublicKey{"kid-1": leafKey.Public()}},
			{ID: "admin", OrgNumber: testOrg, Scopes: []string{admin.ScopeRead}},
		},
	})
	keysOf := func(adminID string) doctor.RegisteredKeysFunc {
		return func(ctx context.Context, s signer.Signer) (*admin.KeySet, error) {
			gc := &grant.Config{ClientID: adminID, Signer: s, Environment: grant.Environment{Issuer: srv.Issuer(), TokenEndpoint: srv.TokenURL()}}
			api := &admin.Client{BaseURL: srv.AdminAPIURL(), Read: gc.TokenSource(ctx, grant.Request{Scopes: []string{admin.ScopeRead}})}
			return api.List(ctx, testClient)
		}
	}
	run := func(kid string, now time.Time, f doctor.RegisteredKeysFunc) doctor.Result {
		t.Helper()
		cfg := doctor.Config{Signer: s, WellKnown: srv.MetadataURL(), ClientID: testClient, KeyID: kid, RegisteredKeys: f,
			Now: func() time.Time { return now }}
		return byCheck(t, doctor.Run(context.Background(), cfg), "registered-key")
	}
	now := time.Now()
	if r := run("kid-1", now, keysOf("admin")); r.Status != doctor.OK || !strings.Contains(r.Message, `kid "kid-1" is registered`) {
		t.Errorf("registered: %+v", r)
	}
	if r := run("kid-1", now.Add(340*24*time.Hour), keysOf("admin")); r.Status != doctor.Warn || !strings.Contains(r.Message, "MP-121") ||
		!strings.Contains(r.Hint, "admin keys rotate") {
		t.Errorf("340 days on: %+v", r)
	}
	if r := run("kid-2", now, keysOf("admin")); r.Status != doctor.Fail || r.Class != doctor.ClassRefused || !strings.Contains(r.Message, "kid-1") ||
		!strings.Contains(r.Hint, "admin keys add") {
		t.Errorf("unregistered kid: %+v", r)
	}
	// The self-service API refuses a client that is not the self-service client.
	r := run("kid-1", now, keysOf(testClient))
	if r.Status != doctor.Fail {
		t.Errorf("not the self-service client: %+v", r)
	}
	var ae *admin.APIError
	var te *grant.TokenError
	if !errors.As(r.Err, &ae) && !errors.As(r.Err, &te) {
		t.Errorf("the error is neither the API's nor Maskinporten's: %v", r.Err)
	} else if ae != nil && ae.Status != http.StatusForbidden {
		t.Errorf("API status %d", ae.Status)
	}
	// Without RegisteredKeys the check does not run.
	for _, res := range doctor.Run(context.Background(), doctor.Config{Signer: s, WellKnown: srv.MetadataURL(), ClientID: testClient, KeyID: "kid-1"}) {
		if res.Check == "registered-key" {
			t.Errorf("registered-key ran without RegisteredKeys: %+v", res)
		}
	}
}
