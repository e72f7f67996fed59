// Package doctor checks a Maskinporten setup, one check at a time, and says
// what is wrong and how to fix it: the key and its certificate (validity,
// key usage, issuing CA, organisation number), the environment, the
// metadata, the clock against the server's, and a real token request.
// mp-hsm doctor prints its results; a server can run the same checks at
// start and log them.
//
// Run runs the checks in a fixed order; each check uses what the earlier
// ones found and is skipped, with a message saying why, when that is
// missing. The checks that find the key on a smart card or HSM (module,
// token, pin, login, key) need PKCS#11 and live in package
// doctor/tokencheck, which Run reaches through the KeyFinder interface.
// This package imports no PKCS#11 (package hsm) itself: give it an open
// signer.Signer, or a KeyFinder. Nothing secret (PIN, grant, token) is
// ever put in a Result.
package doctor

import (
	"context"
	"crypto"
	"crypto/x509"
	"log/slog"
	"net/http"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

// Config is what Run checks. Its fields map onto mp-hsm doctor's flags; a
// server fills in what it has. With the zero value there is nothing to
// check: the environment check fails and the others are skipped.
type Config struct {
	// Key finds the key, running checks of its own first (package
	// doctor/tokencheck: module, token, pin, login and key). Run closes it.
	// If nil, Signer is the key.
	Key KeyFinder
	// Signer is a key the caller opened already, used when Key is nil; the
	// checks begin with the signature. If both are nil, the checks of the
	// key and certificate are skipped.
	Signer signer.Signer

	// KeyID is the kid grants carry instead of x5c (a key registered on
	// the client); empty means x5c.
	KeyID string
	// Algorithm is the JWS alg of the token request; empty means the key's
	// default (see grant.Config.Algorithm).
	Algorithm string

	// WellKnown is the URL of Maskinporten's metadata. When Environment is
	// nil, the environment is the one the metadata names; otherwise the
	// metadata check compares the two. If empty, the metadata is fetched
	// from the environment's issuer.
	WellKnown string
	// Environment chooses Maskinporten's environment for the key's chain.
	// If nil: from WellKnown, or else from the certificate's issuing CA.
	// Whatever it chooses is then checked against the certificate
	// (grant.CheckEnvironment).
	Environment EnvironmentFunc

	// ClientID is the Maskinporten client. The token-request check runs
	// only with ClientID and Request.Scopes.
	ClientID string
	// Request is what the token-request check asks for.
	Request grant.Request
	// CheckRequest checks Request before it is sent; a program may name
	// its own flags in the error. If nil, Request.Validate.
	CheckRequest func(grant.Request) error

	// AllowInsecure allows http endpoints for hosts that are not loopback.
	AllowInsecure bool
	// Timeout bounds each network step (environment, metadata, token
	// request). If zero, 30 seconds.
	Timeout time.Duration
	// HTTPClient fetches the metadata and sends the token request. If nil,
	// the metadata is fetched with http.DefaultTransport and the token
	// request uses grant's default client.
	HTTPClient *http.Client
	// Logger receives the token request's debug records; nil discards.
	Logger *slog.Logger
	// Now is the clock the certificate's validity and the clock skew are
	// judged by. If nil, time.Now.
	Now func() time.Time

	// RegisteredKeys, if set, reads the client's registered keys through
	// Digdir's self-service API for the registered-key check, which looks
	// KeyID up there and warns when the set was last changed KeyAgeWarn
	// or more ago. If nil, that check does not run.
	RegisteredKeys RegisteredKeysFunc

	// Report, if set, is called with each result as its check ends, so
	// that slow checks can show progress.
	Report func(Result)
}

// EnvironmentFunc chooses Maskinporten's environment for a key whose
// certificate chain (leaf first, possibly empty) is given, and says in a
// few words how it chose, such as "--env test". mp-hsm's resolves its
// flags.
type EnvironmentFunc func(ctx context.Context, chain []*x509.Certificate) (env grant.Environment, how string, err error)

// KeyFinder finds the key the checks after it judge. Package
// doctor/tokencheck implements it on a PKCS#11 token.
type KeyFinder interface {
	// FindKey runs the finder's own checks in order, passing each result
	// to report as it ends, and returns what they found.
	FindKey(ctx context.Context, report func(Result)) FoundKey
	// Close releases what FindKey opened; the key is not used after it.
	Close() error
}

// FoundKey is what a KeyFinder found, for the checks after it.
type FoundKey struct {
	// Key is the private key the signature check signs with; nil when no
	// key was found.
	Key crypto.Signer
	// Signer is Key with its certificate chain, as grants are signed; nil
	// when there is no usable key, such as when the certificate for the
	// key holds another public key.
	Signer signer.Signer
	// Chain is the key's certificate chain, leaf first, which the
	// certificate checks judge. Without a login it is the chain of the
	// certificate the key selection points at. Empty: no certificate.
	Chain []*x509.Certificate
	// CertErr is why the certificate the token holds for the key cannot be
	// used with it (see signer.ErrCertificateMismatch), or nil.
	CertErr error
	// NoLogin is set when the token was found but not logged in, so that
	// whether the certificate in Chain is the key's cannot be told.
	NoLogin bool
}

// defaultTimeout is Config.Timeout's zero value.
const defaultTimeout = 30 * time.Second

// Thresholds of the checks.
const (
	ExpiryWarn = 60 * 24 * time.Hour // validity warns when the certificate expires sooner
	SkewWarn   = 2 * time.Second     // clock warns beyond this
	SkewFail   = 5 * time.Second     // clock fails beyond this
)

// run holds what the checks found so far.
type run struct {
	cfg     Config
	now     func() time.Time
	timeout time.Duration
	results Results

	key     FoundKey
	cert    *x509.Certificate // key.Chain[0], the leaf the checks judge
	envr    *grant.Environment
	envFail bool
	meta    *metadata // the fetched metadata, once fetched
}

// Run runs the checks, in order: those of cfg.Key (or none for
// cfg.Signer), then signature, certificate, validity, key-usage, issuer,
// org-number, environment, metadata, clock and token-request, and
// registered-key when cfg.RegisteredKeys is set. Each ends in
// one Result; Run never stops early, and the Results say what failed.
// Canceling ctx makes the remaining network checks fail.
func Run(ctx context.Context, cfg Config) Results {
	r := &run{cfg: cfg, now: cfg.Now, timeout: cfg.Timeout}
	if r.now == nil {
		r.now = time.Now
	}
	if r.timeout <= 0 {
		r.timeout = defaultTimeout
	}
	switch {
	case cfg.Key != nil:
		defer cfg.Key.Close()
		r.key = cfg.Key.FindKey(ctx, r.add)
	case cfg.Signer != nil:
		r.key = FoundKey{Key: cfg.Signer, Signer: cfg.Signer, Chain: cfg.Signer.Chain()}
	}
	if len(r.key.Chain) > 0 {
		r.cert = r.key.Chain[0]
	}
	r.checkSignature(ctx)
	r.checkCertificate()
	r.checkValidity()
	r.checkKeyUsage()
	r.checkIssuer()
	r.checkOrgNumber()
	r.checkEnvironment(ctx)
	r.checkMetadata(ctx)
	r.checkClock()
	r.checkTokenRequest(ctx)
	r.checkRegisteredKey(ctx)
	return r.results
}

// add records a result and reports it.
func (r *run) add(res Result) {
	res = res.normalize()
	r.results = append(r.results, res)
	if r.cfg.Report != nil {
		r.cfg.Report(res)
	}
}

func (r *run) ok(check, msg string) {
	r.add(Result{Check: check, Status: OK, Message: msg})
}

func (r *run) warn(check, msg, hint string) {
	r.add(Result{Check: check, Status: Warn, Message: msg, Hint: hint})
}

func (r *run) fail(check string, class Class, err error, msg, hint string) {
	r.add(Result{Check: check, Status: Fail, Message: msg, Hint: hint, Class: class, Err: err})
}

func (r *run) skip(check, msg string) {
	r.add(Result{Check: check, Status: Skip, Message: msg})
}
