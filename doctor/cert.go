package doctor

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/inspect"
	"github.com/mp-hsm/mp-hsm/internal/orgid"
	"github.com/mp-hsm/mp-hsm/signer"
)

// signTimeout bounds the test signature, which may wait for a PIN pad.
const signTimeout = 2 * time.Minute

// checkSignature signs a random digest and verifies it with the
// certificate's public key, or the key's own without a certificate.
func (r *run) checkSignature(ctx context.Context) Result {
	const check = "signature"
	key := r.key.Key
	if key == nil {
		return skip(check, "needs the key")
	}
	pub := key.Public()
	verifyWith := "the key's public half"
	if r.cert != nil {
		pub, verifyWith = r.cert.PublicKey, "the certificate's public key"
	}
	digest := make([]byte, 32)
	rand.Read(digest) // never fails (crypto/rand, Go 1.24)
	ctx, cancel := context.WithTimeout(ctx, signTimeout)
	defer cancel()
	var sig []byte
	var err error
	if cs, ok := key.(interface { // hsm.Key's and p11.TokenSigner's signing with a deadline
		SignContext(context.Context, []byte, crypto.SignerOpts) ([]byte, error)
	}); ok {
		sig, err = cs.SignContext(ctx, digest, crypto.SHA256)
	} else {
		sig, err = key.Sign(rand.Reader, digest, crypto.SHA256)
	}
	if err != nil {
		return Failed(check, ClassToken, err, "the token refused to sign with the key: check that it is a signing key (CKA_SIGN) and the card is still inserted")
	}
	var verr error
	switch k := pub.(type) {
	case *rsa.PublicKey:
		verr = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig)
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			verr = errors.New("ECDSA verification failed")
		}
	default:
		verr = fmt.Errorf("cannot verify with a %T", pub)
	}
	if verr != nil {
		return fail(check, ClassToken, verr, "a test signature made on the token does not verify with "+verifyWith+": "+verr.Error(),
			"the certificate does not belong to this key, or the token signs wrongly: choose the key that matches the certificate (see mp-hsm list)")
	}
	return ok(check, "a test signature over a random SHA-256 digest verifies with "+verifyWith)
}

// checkCertificate checks that the certificate holds the key.
func (r *run) checkCertificate(context.Context) Result {
	const check = "certificate"
	key, cert := r.key.Key, r.cert
	switch {
	case key == nil && cert == nil && r.key.NoLogin:
		return skip(check, "cannot tell which certificate is the key's without a login: give --key-id or a PIN")
	case key == nil && cert == nil:
		return skip(check, "needs the key")
	case key == nil:
		return skip(check, fmt.Sprintf("not compared with the key (no login); checking %q", cert.Subject.CommonName))
	case cert == nil:
		if r.key.CertErr != nil {
			return Failed(check, ClassToken, r.key.CertErr, "the certificate with the key's CKA_ID holds another public key: replace it with the key's certificate")
		}
		if r.cfg.KeyID != "" {
			return ok(check, fmt.Sprintf("no certificate for the key on the token; grants carry kid %q", r.cfg.KeyID))
		}
		return fail(check, ClassToken, nil, "no certificate for the key on the token, so grants cannot carry x5c",
			"write the key's certificate to the token, or register the public key (mp-hsm jwk) on the client and give --kid")
	default:
		if err := signer.MatchCertificate(key.Public(), cert); err != nil {
			return Failed(check, ClassToken, err, "choose the key that matches the certificate (see mp-hsm list)")
		}
		return ok(check, fmt.Sprintf("%q (serial %x) holds the key; x5c carries a chain of %d", cert.Subject.CommonName, cert.SerialNumber, len(r.key.Chain)))
	}
}

// needsCert runs a check of the certificate, or skips it, saying why, when there is none.
func (r *run) needsCert(check string, f func(check string) Result) func(context.Context) Result {
	return func(context.Context) Result {
		switch {
		case r.cert != nil:
			return f(check)
		case r.key.Key != nil && r.cfg.KeyID != "":
			return skip(check, "no certificate: the key is identified by --kid")
		}
		return skip(check, "needs the certificate")
	}
}

// checkValidity checks that the certificate is valid for expiryWarn more.
func (r *run) checkValidity(check string) Result {
	now := r.now()
	c := r.cert
	day := func(t time.Time) string { return t.UTC().Format("2006-01-02") }
	switch {
	case now.After(c.NotAfter):
		return fail(check, ClassToken, nil, fmt.Sprintf("the certificate expired on %s (%s)", day(c.NotAfter), inspect.Relative("not_after", c.NotAfter, now)),
			"renew the enterprise certificate with Buypass or Commfides and put the new one on the token (and register it where a kid is used)")
	case now.Before(c.NotBefore):
		return fail(check, ClassToken, nil, fmt.Sprintf("the certificate is valid only from %s (%s)", day(c.NotBefore), inspect.Relative("not_before", c.NotBefore, now)),
			"wait until it is valid, or check the local clock")
	case c.NotAfter.Sub(now) < expiryWarn:
		return warn(check, fmt.Sprintf("the certificate expires on %s (in %s)", day(c.NotAfter), inspect.Duration(c.NotAfter.Sub(now))),
			"order a new certificate now: renewal takes days, and the key must be registered again where a kid is used")
	default:
		return ok(check, fmt.Sprintf("valid until %s (in %s)", day(c.NotAfter), inspect.Duration(c.NotAfter.Sub(now))))
	}
}

// checkKeyUsage warns for a card's signing (nonRepudiation) certificate.
func (r *run) checkKeyUsage(check string) Result {
	u := r.cert.KeyUsage
	names := strings.Join(inspect.KeyUsageNames(u), ", ")
	switch {
	case u == 0:
		return ok(check, "no keyUsage extension: any use allowed")
	case u&x509.KeyUsageDigitalSignature != 0:
		return ok(check, names+": fits authentication")
	case u&x509.KeyUsageContentCommitment != 0:
		return warn(check, "keyUsage "+names+" only: this is the card's signing key, not its authentication key",
			"choose the authentication key, whose certificate has keyUsage digitalSignature (see mp-hsm list, then --key-id)")
	default:
		return fail(check, ClassToken, nil, "keyUsage "+names+" does not allow signatures",
			"choose the authentication key, whose certificate has keyUsage digitalSignature (see mp-hsm list)")
	}
}

// checkIssuer tells the environment from the issuing CA.
func (r *run) checkIssuer(check string) Result {
	ca := r.cert.Issuer.CommonName
	env, err := grant.EnvironmentForCertificate(r.cert)
	if err != nil {
		return warn(check, fmt.Sprintf("%q is not a known Buypass or Commfides CA, so the environment cannot be told from it", ca),
			"Maskinporten accepts x5c only with Buypass or Commfides enterprise certificates; with another key register it (mp-hsm jwk) and give --kid, and give --env")
	}
	return ok(check, fmt.Sprintf("%s: a %s certificate", ca, env.Name))
}

// checkOrgNumber checks that the certificate holds an organisation number.
func (r *run) checkOrgNumber(check string) Result {
	org, found := orgid.FromCertificate(r.cert)
	switch {
	case !found && r.cfg.KeyID != "":
		return warn(check, "the certificate holds no organisation number", "with --kid the certificate is not sent, so this only matters for x5c grants")
	case !found:
		return fail(check, ClassToken, nil, "the certificate holds no organisation number (organizationIdentifier NTRNO-... or serialNumber)",
			"Maskinporten needs an enterprise certificate (virksomhetssertifikat) whose organisation owns the client")
	case !grant.ValidOrgNumber(org):
		return warn(check, org+" has a wrong check digit", "this certificate is unlikely to be a real enterprise certificate")
	default:
		return ok(check, org)
	}
}
