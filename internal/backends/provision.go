//go:build cgo

package backends

import (
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
	"github.com/mp-hsm/mp-hsm/softhsm"
)

// KeySpec describes a key pair for GenerateKey.
type KeySpec struct {
	// Label is the CKA_LABEL of both key objects.
	Label string
	// ID is the CKA_ID of both key objects.
	ID []byte
	// Kind is "rsa2048" or "ec-p256".
	Kind string
	// AlwaysAuthenticate sets CKA_ALWAYS_AUTHENTICATE on the private key:
	// the PIN is wanted again before each signature.
	AlwaysAuthenticate bool
}

// provisioner is the handle GenerateKey and PutCertificate keep on
// Module: loaded and initialised on first use, finalised by Stop if it
// initialised the module.
type provisioner struct {
	mu   sync.Mutex
	ctx  *pkcs11.Ctx
	slot uint
}

// module loads and initialises r.Module on first use and finds r's token
// in it. p.mu must be held.
func (r *Running) module() (*pkcs11.Ctx, uint, error) {
	p := &r.p11
	if p.ctx != nil {
		return p.ctx, p.slot, nil
	}
	ctx := pkcs11.New(r.Module)
	if ctx == nil {
		return nil, 0, fmt.Errorf("%s: cannot load the PKCS#11 module %s", r.Name, r.Module)
	}
	owned := true
	if err := ctx.Initialize(); err != nil {
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			ctx.Destroy()
			return nil, 0, fmt.Errorf("%s: C_Initialize %s: %w", r.Name, r.Module, err)
		}
		// Another user in the process initialised it, and finalises it.
		owned = false
	}
	slot, err := r.findSlot(ctx)
	if err != nil {
		if owned {
			ctx.Finalize()
		}
		ctx.Destroy()
		return nil, 0, err
	}
	p.ctx, p.slot = ctx, slot
	r.onStop(func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		var err error
		if owned {
			if err = ctx.Finalize(); err != nil {
				err = fmt.Errorf("%s: C_Finalize: %w", r.Name, err)
			}
		}
		ctx.Destroy()
		p.ctx = nil
		return err
	})
	return ctx, slot, nil
}

// findSlot returns the slot whose token has r's serial and label.
func (r *Running) findSlot(ctx *pkcs11.Ctx) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("%s: C_GetSlotList: %w", r.Name, err)
	}
	var seen []string
	for _, id := range slots {
		ti, err := ctx.GetTokenInfo(id)
		if err != nil {
			continue // a slot of another module (p11-kit) may fail alone
		}
		label, serial := strings.TrimRight(ti.Label, " \x00"), strings.TrimRight(ti.SerialNumber, " \x00")
		if label == r.Label && serial == r.Serial {
			return id, nil
		}
		seen = append(seen, fmt.Sprintf("slot %d %q serial %q", id, label, serial))
	}
	return 0, fmt.Errorf("%s: no token %q serial %q in %s; it shows: %s", r.Name, r.Label, r.Serial, r.Module, strings.Join(seen, "; "))
}

// session runs f in a read-write session on r's token, logged in as the
// user. A login already in place in the process (CKR_USER_ALREADY_LOGGED_IN)
// is used and left; otherwise the session logs out when f returns, which
// logs out every session of the process on the token.
func (r *Running) session(f func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error) error {
	r.p11.mu.Lock()
	defer r.p11.mu.Unlock()
	ctx, slot, err := r.module()
	if err != nil {
		return err
	}
	return softhsm.InSession(ctx, slot, r.PIN, true, f)
}

// p256 is the DER OID of the named curve P-256, CKA_EC_PARAMS.
var p256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// GenerateKey generates a key pair on r's token as spec says and returns
// its public key. Both halves are token objects with spec's CKA_ID and
// CKA_LABEL; the private key is private, sensitive, not extractable and
// can sign; every backend takes these templates as they are. It logs in
// with r.PIN for the generation (see session): call it before the code
// under test logs in.
func (r *Running) GenerateKey(spec KeySpec) (crypto.PublicKey, error) {
	var mech uint
	var keyType uint
	pubT := []*pkcs11.Attribute{}
	switch spec.Kind {
	case "rsa2048":
		mech, keyType = pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11.CKK_RSA
		pubT = append(pubT,
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, 2048),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
	case "ec-p256":
		mech, keyType = pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKK_EC
		pubT = append(pubT, pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256))
	default:
		return nil, fmt.Errorf("%s: key kind %q: want rsa2048 or ec-p256", r.Name, spec.Kind)
	}
	pubT = append(pubT,
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_ID, spec.ID),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, spec.Label))
	privT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_ID, spec.ID),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, spec.Label),
	}
	if spec.AlwaysAuthenticate {
		privT = append(privT, pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_AUTHENTICATE, true))
	}
	var pub crypto.PublicKey
	err := r.session(func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		pubH, _, err := ctx.GenerateKeyPair(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, pubT, privT)
		if err != nil {
			return fmt.Errorf("C_GenerateKeyPair: %w", err)
		}
		if keyType == pkcs11.CKK_RSA {
			pub, err = softhsm.ReadRSAPublicKey(ctx, sh, pubH)
		} else {
			pub, err = softhsm.ReadECPublicKey(ctx, sh, pubH, elliptic.P256())
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: generate %s key %q: %w", r.Name, spec.Kind, spec.Label, err)
	}
	return pub, nil
}

// PutCertificate writes cert to r's token as a public X.509 certificate
// object with CKA_ID id and CKA_LABEL label (and CKA_SUBJECT, CKA_ISSUER,
// CKA_SERIAL_NUMBER, CKA_VALUE), as a card issuer does.
func (r *Running) PutCertificate(cert *x509.Certificate, id []byte, label string) error {
	if cert == nil {
		return fmt.Errorf("%s: no certificate given", r.Name)
	}
	tmpl, err := softhsm.CertificateTemplate(cert, id, label)
	if err != nil {
		return fmt.Errorf("%s: %w", r.Name, err)
	}
	err = r.session(func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		if _, err := ctx.CreateObject(sh, tmpl); err != nil {
			return fmt.Errorf("C_CreateObject: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: write certificate %q: %w", r.Name, cert.Subject.CommonName, err)
	}
	return nil
}
