//go:build cgo

package crypto11interop

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/ThalesGroup/crypto11"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/grant/emulator"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

func init() { scenarios["grant"] = grantScenario }

// grantScenario opens the token with crypto11 alone, reads the key and its
// certificates through crypto11, and gets tokens from the emulator with
// grants that this key signs through signer.NewFileSigner: with the chain
// (x5c), with the leaf alone, and with no certificate at all.
func grantScenario(c *child) error {
	ctx, err := crypto11.Configure(&crypto11.Config{
		Path: c.env(envModule), TokenLabel: c.env(envToken), Pin: c.env(envPIN),
	})
	if c.step("crypto11 configure", err) != nil {
		return err
	}
	// crypto11 v1.6.2 panics on a second Close ("referenced module not
	// found"): close once, at the end or on the way out.
	closed := false
	defer func() {
		if !closed {
			ctx.Close()
		}
	}()
	key, err := ctx.FindKeyPair(nil, []byte(c.env(envKey)))
	if err == nil && key == nil {
		err = errNotFound("key")
	}
	if c.step("crypto11 find key", err) != nil {
		return err
	}
	var certs []*x509.Certificate
	for _, label := range []string{c.env(envKey), c.env(envIntermediate)} {
		cert, err := ctx.FindCertificate(nil, []byte(label), nil)
		if err == nil && cert == nil {
			err = errNotFound("certificate " + label)
		}
		if err != nil {
			c.step("crypto11 find certificates", err)
			return err
		}
		certs = append(certs, cert)
	}
	c.step("crypto11 find certificates", nil)

	// The certificates as crypto11 found them, in any order: BuildChain
	// puts the leaf first and leaves the root out.
	chain, err := signer.BuildChain(key.Public(), certs, nil)
	if err == nil && len(chain) != 2 {
		err = errNotFound("a chain of leaf and intermediate")
	}
	if c.step("chain", err) != nil {
		return err
	}
	env := grant.Environment{Issuer: c.env(envIssuer), TokenEndpoint: c.env(envTokenURL)}
	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
	}{
		{"token with x5c", chain},
		{"token with the leaf alone", chain[:1]},
		{"token without certificate", nil},
	} {
		s, err := signer.NewFileSigner(key, tc.chain)
		if err != nil {
			c.step(tc.name, err)
			return err
		}
		cfg := &grant.Config{ClientID: c.env(envClient), Signer: s, Environment: env}
		tok, err := cfg.Exchange(context.Background(), grant.Request{Scopes: []string{"test:read"}})
		if err == nil && (tok.AccessToken == "" || tok.Scope != "test:read") {
			err = errNotFound("an access token for test:read")
		}
		c.step(tc.name, err)
	}
	closed = true
	return c.step("crypto11 close", ctx.Close())
}

// errNotFound is a step's failure to find what it looked for.
type errNotFound string

func (e errNotFound) Error() string { return "not found: " + string(e) }

// TestCrypto11KeySignsGrant: a key that crypto11 opened signs a
// Maskinporten grant that the emulator accepts. The emulator knows no key
// of the client, so only the chain (x5c) to its trusted root can identify
// the key: the leaf alone is refused, and with no certificate grant
// refuses to build the grant.
//
// It does not run in parallel with TestSharedModule, whose children use
// the same token (see there).
func TestCrypto11KeySignsGrant(t *testing.T) {
	ca, tok := token(t)
	srv := emulator.NewTest(t, emulator.Config{
		Roots: []*x509.Certificate{ca.Root},
		Clients: []emulator.Client{{
			ID: "crypto11-client", OrgNumber: softhsm.DefaultOrgNumber, Scopes: []string{"test:read"},
		}},
	})
	got := runScenario(t, "grant",
		envModule+"="+tok.Module, envToken+"="+tok.Label, envPIN+"="+tok.PIN,
		envKey+"=Authentication", envIntermediate+"="+ca.Intermediate.Subject.CommonName,
		envIssuer+"="+srv.Issuer(), envTokenURL+"="+srv.TokenURL(), envClient+"=crypto11-client")
	checkTranscript(t, got, []string{
		"crypto11 configure: ok",
		"crypto11 find key: ok",
		"crypto11 find certificates: ok",
		"chain: ok",
		"token with x5c: ok",
		"token with the leaf alone: ErrRefused invalid_grant",
		"token without certificate: ErrInvalidConfig",
		"crypto11 close: ok",
	})
	st := srv.Stats()
	if st.Issued != 1 {
		t.Errorf("emulator issued %d tokens, want 1 (stats %+v)", st.Issued, st)
	}
}
