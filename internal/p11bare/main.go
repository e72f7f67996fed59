//go:build cgo

// Command p11bare is the baseline for mp-hsm's economy of PKCS#11 calls:
// the job of `mp-hsm token` on the token's side done with miekg/pkcs11 and
// nothing else, in the fewest calls (minimumCalls in cmd/mp-hsm's
// calls_e2e_test.go lists them). It finds the token by label, logs in,
// reads every certificate (CKA_ID and CKA_VALUE), takes the one for
// authentication (keyUsage digitalSignature without nonRepudiation), finds
// the private key with its CKA_ID, signs a SHA-256 RSA PKCS#1 v1.5
// signature once, logs out and prints the signature in base64url. It
// checks nothing else: no PIN flags, no key attributes, no choice among
// several keys.
//
// The module is MP_HSM_MODULE and the PIN MP_HSM_PIN.
//
//	p11bare -token-label LABEL
package main

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/miekg/pkcs11"
)

func main() {
	label := flag.String("token-label", "", "the token's label")
	flag.Parse()
	sig, err := run(os.Getenv("MP_HSM_MODULE"), *label, os.Getenv("MP_HSM_PIN"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "p11bare:", err)
		os.Exit(1)
	}
	fmt.Println(base64.RawURLEncoding.EncodeToString(sig))
}

func run(module, label, pin string) (_ []byte, err error) {
	p := pkcs11.New(module)
	if p == nil {
		return nil, fmt.Errorf("cannot load %s", module)
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil {
		return nil, fmt.Errorf("C_Initialize: %w", err)
	}
	defer func() { err = errors.Join(err, p.Finalize()) }()
	slots, err := p.GetSlotList(true)
	if err != nil {
		return nil, fmt.Errorf("C_GetSlotList: %w", err)
	}
	var matched []uint // every slot is asked: a label may be on two tokens
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			return nil, fmt.Errorf("C_GetTokenInfo: %w", err)
		}
		if ti.Label == label {
			matched = append(matched, s)
		}
	}
	if len(matched) != 1 {
		return nil, fmt.Errorf("%d tokens labelled %q, want 1", len(matched), label)
	}
	slot := matched[0]
	sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return nil, fmt.Errorf("C_OpenSession: %w", err)
	}
	defer func() { err = errors.Join(err, p.CloseSession(sh)) }()
	if err := p.Login(sh, pkcs11.CKU_USER, pin); err != nil {
		return nil, fmt.Errorf("C_Login: %w", err)
	}
	defer func() { err = errors.Join(err, p.Logout(sh)) }()
	certs, err := find(p, sh, pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		pkcs11.NewAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509))
	if err != nil {
		return nil, err
	}
	var id []byte
	for _, h := range certs {
		a, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, nil), pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if err != nil {
			return nil, fmt.Errorf("C_GetAttributeValue: %w", err)
		}
		c, err := x509.ParseCertificate(a[1].Value)
		if err != nil {
			return nil, err
		}
		if !c.IsCA && c.KeyUsage&x509.KeyUsageDigitalSignature != 0 && c.KeyUsage&x509.KeyUsageContentCommitment == 0 {
			id = a[0].Value
		}
	}
	if id == nil {
		return nil, errors.New("no authentication certificate")
	}
	keys, err := find(p, sh, pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	if err != nil {
		return nil, err
	}
	if len(keys) != 1 {
		return nil, fmt.Errorf("%d private keys with the certificate's CKA_ID, want 1", len(keys))
	}
	if err := p.SignInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_RSA_PKCS, nil)}, keys[0]); err != nil {
		return nil, fmt.Errorf("C_SignInit: %w", err)
	}
	sig, err := p.Sign(sh, []byte("p11bare signing input"))
	if err != nil {
		return nil, fmt.Errorf("C_Sign: %w", err)
	}
	return sig, nil
}

// find runs one search.
func find(p *pkcs11.Ctx, sh pkcs11.SessionHandle, template ...*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := p.FindObjectsInit(sh, template); err != nil {
		return nil, fmt.Errorf("C_FindObjectsInit: %w", err)
	}
	hs, _, err := p.FindObjects(sh, 64)
	if err != nil {
		_ = p.FindObjectsFinal(sh)
		return nil, fmt.Errorf("C_FindObjects: %w", err)
	}
	return hs, p.FindObjectsFinal(sh)
}
