//go:build cgo

package conformance

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/signer/p11"
)

// signingInput is what the features sign: a JWS signing input.
const signingInput = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJjb25mb3JtYW5jZSJ9"

// sameKey fails c unless key is the one with public key want.
func sameKey(c *check, key *hsm.Key, want crypto.PublicKey) {
	c.t.Helper()
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := key.Public().(equaler); !ok || !pub.Equal(want) {
		c.fail("found key %s, not the key generated with that selection", key)
	}
}

func (fx *fixture) selectSlot(c *check) {
	id := fx.slot.ID
	s, err := fx.mod.FindSlot(hsm.TokenSelector{SlotID: &id})
	if err != nil {
		c.fatal("slot %d: %v", id, err)
	}
	if s.Token == nil || s.Token.Serial != fx.r.Serial {
		c.fail("slot %d holds %v, want serial %s", id, s.Token, fx.r.Serial)
	}
	c.note("slot %d", id)
}

func (fx *fixture) selectLabel(c *check) {
	s, err := fx.mod.FindSlot(hsm.TokenSelector{Label: fx.r.Label})
	if err != nil {
		c.fatal("label %q: %v", fx.r.Label, err)
	}
	if s.ID != fx.slot.ID {
		c.fail("label %q found slot %d, want %d", fx.r.Label, s.ID, fx.slot.ID)
	}
}

func (fx *fixture) selectSerial(c *check) {
	s, err := fx.mod.FindSlot(hsm.TokenSelector{Serial: fx.r.Serial})
	if err != nil {
		c.fatal("serial %q: %v", fx.r.Serial, err)
	}
	if s.ID != fx.slot.ID {
		c.fail("serial %q found slot %d, want %d", fx.r.Serial, s.ID, fx.slot.ID)
	}
}

func (fx *fixture) selectID(c *check) {
	for _, sel := range []hsm.KeySelector{{ID: rsaID}, {Label: rsaLabel}, {ID: aaID, Label: aaLabel}} {
		key, err := fx.tok.FindKey(sel)
		if err != nil {
			c.fail("%s: %v", sel, err)
			continue
		}
		want := crypto.PublicKey(fx.rsaPub)
		if bytes.Equal(sel.ID, aaID) {
			want = fx.aaPub
		}
		sameKey(c, key, want)
	}
	key, err := fx.tok.FindKey(hsm.KeySelector{})
	if err != nil {
		c.fatal("the default key: %v", err)
	}
	sameKey(c, key, fx.rsaPub)
}

func (fx *fixture) selectURI(c *check) {
	u := &pkcs11uri.URI{Token: fx.r.Label, Serial: fx.r.Serial, ID: rsaID, Object: rsaLabel, Type: "private"}
	s := u.String()
	parsed, err := pkcs11uri.Parse(s)
	if err != nil {
		c.fatal("%s: %v", s, err)
	}
	ts, ks, err := hsm.SelectorsFromURI(parsed)
	if err != nil {
		c.fatal("%s: %v", s, err)
	}
	slot, err := fx.mod.FindSlot(ts)
	if err != nil {
		c.fatal("%s: %v", s, err)
	}
	if slot.ID != fx.slot.ID {
		c.fail("%s found slot %d, want %d", s, slot.ID, fx.slot.ID)
	}
	key, err := fx.tok.FindKey(ks)
	if err != nil {
		c.fatal("%s: %v", s, err)
	}
	sameKey(c, key, fx.rsaPub)
	c.note("%s", s)
}

// algMech is the mechanism each JWS algorithm needs on the token.
var algMech = map[string]struct {
	mech uint
	name string
}{
	"RS256": {pkcs11.CKM_RSA_PKCS, "CKM_RSA_PKCS"},
	"RS384": {pkcs11.CKM_RSA_PKCS, "CKM_RSA_PKCS"},
	"RS512": {pkcs11.CKM_RSA_PKCS, "CKM_RSA_PKCS"},
	"PS256": {pkcs11.CKM_RSA_PKCS_PSS, "CKM_RSA_PKCS_PSS"},
	"ES256": {pkcs11.CKM_ECDSA, "CKM_ECDSA"},
}

// signAlg signs with alg through signer/p11 and the JWS method of package
// signer, and verifies, if the token has the mechanism.
func (fx *fixture) signAlg(c *check, alg string) {
	m := algMech[alg]
	has, err := fx.r.HasMechanism(m.mech)
	if err != nil {
		c.fatal("%v", err)
	}
	if !has {
		c.unsupported("C_GetMechanismList has no " + m.name)
	}
	id, pub := rsaID, crypto.PublicKey(fx.rsaPub)
	if alg == "ES256" {
		if fx.ecPub == nil {
			c.unsupported(fx.ecNote)
		}
		id, pub = ecID, fx.ecPub
	}
	if err := signVerify(fx.tok, id, alg, pub); err != nil {
		c.fatal("%v", err)
	}
}

// signVerify signs signingInput with alg and the key id of tok through
// signer/p11, and verifies the signature with pub.
func signVerify(tok *hsm.Token, id []byte, alg string, pub crypto.PublicKey) error {
	key, err := tok.FindKey(hsm.KeySelector{ID: id})
	if err != nil {
		return err
	}
	s, err := p11.New(key, p11.Options{})
	if err != nil {
		return err
	}
	method, err := signer.Method(alg)
	if err != nil {
		return err
	}
	sig, err := method.Sign(signingInput, s)
	if err != nil {
		return err
	}
	return method.Verify(signingInput, sig, pub)
}

// alwaysAuthenticate signs with the CKA_ALWAYS_AUTHENTICATE key.
func (fx *fixture) alwaysAuthenticate(c *check) {
	key, err := fx.tok.FindKey(hsm.KeySelector{ID: aaID})
	if err != nil {
		c.fatal("%v", err)
	}
	c.note("%s key; the token reports CKA_ALWAYS_AUTHENTICATE %v", key.Info().Type, key.Info().AlwaysAuthenticate)
	alg := "RS256"
	if key.Info().Type == hsm.KeyTypeEC {
		alg = "ES256"
	}
	for i := range 2 { // a second signature needs the context login again
		if err := signVerify(fx.tok, aaID, alg, fx.aaPub); err != nil {
			c.fatal("signature %d: %v", i+1, err)
		}
	}
}

// chain reads the chain through signer/p11 and verifies it to the root.
func (fx *fixture) chain(c *check) {
	key, err := fx.tok.FindKey(hsm.KeySelector{ID: rsaID})
	if err != nil {
		c.fatal("%v", err)
	}
	s, err := p11.New(key, p11.Options{})
	if err != nil {
		c.fatal("%v", err)
	}
	ch := s.Chain()
	if len(ch) != 2 || !ch[0].Equal(fx.rsaCert) || !ch[1].Equal(fx.ca.Intermediate) {
		c.fatal("chain of %d certificates, want the leaf and the issuing CA", len(ch))
	}
	roots := x509.NewCertPool()
	roots.AddCert(fx.ca.Root)
	inter := x509.NewCertPool()
	inter.AddCert(ch[1])
	if _, err := ch[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		c.fail("the chain read from the token does not verify: %v", err)
	}
}

// concurrent signs with 64 goroutines at once through one signer.
func (fx *fixture) concurrent(c *check) {
	key, err := fx.tok.FindKey(hsm.KeySelector{ID: rsaID})
	if err != nil {
		c.fatal("%v", err)
	}
	s, err := p11.New(key, p11.Options{})
	if err != nil {
		c.fatal("%v", err)
	}
	const n = 64
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			digest := sha256.Sum256(fmt.Appendf(nil, "signature %d", i))
			sig, err := s.Sign(nil, digest[:], crypto.SHA256)
			if err == nil {
				err = verifyPKCS1(fx, digest[:], sig)
			}
			errs[i] = err
		}()
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.fail("%v", err)
	}
	c.note("token sessions for signing: at most %d", fx.tok.MaxSessions())
}

// afterFailedSignature makes a signature fail after C_SignInit (raw
// PKCS #1 input longer than the modulus allows, so C_Sign refuses it) on a
// token with one signing session, then signs again.
func (fx *fixture) afterFailedSignature(c *check) {
	tok, err := fx.mod.OpenSlot(fx.slot, hsm.TokenOptions{MaxSessions: 1})
	if err != nil {
		c.fatal("%v", err)
	}
	defer tok.Close()
	// The process is logged in already (fx.tok): this Login meets
	// CKR_USER_ALREADY_LOGGED_IN, which hsm takes as logged in.
	if err := tok.Login(hsm.StaticPIN([]byte(fx.r.PIN)), hsm.LoginOptions{}); err != nil {
		c.fatal("%v", err)
	}
	key, err := tok.FindKey(hsm.KeySelector{ID: rsaID})
	if err != nil {
		c.fatal("%v", err)
	}
	if _, err := key.Sign(nil, bytes.Repeat([]byte{0x5a}, 300), crypto.Hash(0)); err == nil {
		c.fatal("a raw RSA signature of 300 bytes with a 2048-bit key did not fail")
	} else {
		c.note("the failed signature: %v", err)
	}
	digest := sha256.Sum256([]byte(signingInput))
	sig, err := key.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_OPERATION_ACTIVE)) {
			c.fatal("the signature after the failed one met CKR_OPERATION_ACTIVE: %v", err)
		}
		c.fatal("the signature after the failed one: %v", err)
	}
	if err := verifyPKCS1(fx, digest[:], sig); err != nil {
		c.fail("%v", err)
	}
}

// verifyPKCS1 verifies an RS256 signature by the RSA key.
func verifyPKCS1(fx *fixture, digest, sig []byte) error {
	if err := rsa.VerifyPKCS1v15(fx.rsaPub, crypto.SHA256, digest, sig); err != nil {
		return fmt.Errorf("the signature does not verify: %w", err)
	}
	return nil
}
