// Package doctor checks a Maskinporten setup one check at a time, saying
// what is wrong and how to fix it; a check whose input an earlier one did not
// find is skipped, saying why. The PKCS#11 checks live in doctor/tokencheck
// behind KeyFinder, so this package needs no cgo. No Result ever holds a
// PIN, grant or token.
package doctor

import (
	"cmp"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/signer"
)

// Config is what Run checks; its fields map onto mp-hsm doctor's flags.
// With the zero value the environment check fails and the others skip.
type Config struct {
	// Key finds the key with checks of its own (doctor/tokencheck); Run
	// closes it. If nil, Signer is the key; with neither, the key and
	// certificate checks are skipped.
	Key    KeyFinder
	Signer signer.Signer

	KeyID     string // the kid grants carry instead of x5c; empty means x5c
	Algorithm string // the JWS alg; empty means the key's default

	// Environment chooses the environment for the key's chain; if nil,
	// WellKnown (the metadata URL) or else the certificate's CA do. With both,
	// the metadata check compares them; an empty WellKnown is the issuer's.
	WellKnown   string
	Environment EnvironmentFunc

	// ClientID and Request are what the token-request check asks for; it
	// runs only with a ClientID and scopes. CheckRequest checks Request
	// before it is sent; nil means Request.Validate.
	ClientID     string
	Request      grant.Request
	CheckRequest func(grant.Request) error

	AllowInsecure bool             // allow http endpoints for hosts that are not loopback
	Timeout       time.Duration    // bounds each network step; zero means 30 s
	HTTPClient    *http.Client     // for the metadata and the token request; nil means the defaults
	Logger        *slog.Logger     // the token request's debug records; nil discards
	Now           func() time.Time // the clock validity and skew are judged by; nil means time.Now

	RegisteredKeys RegisteredKeysFunc // if set, reads the client's registered keys for the registered-key check
	Report         func(Result)       // if set, gets each result as its check ends (progress)
}

// EnvironmentFunc chooses the environment for a chain (leaf first,
// possibly empty) and says in a few words how, such as "--env test".
type EnvironmentFunc func(ctx context.Context, chain []*x509.Certificate) (env grant.Environment, how string, err error)

// KeyFinder finds the key the later checks judge, reporting checks of its
// own (doctor/tokencheck on a PKCS#11 token); Close releases what it opened.
type KeyFinder interface {
	FindKey(ctx context.Context, report func(Result)) FoundKey
	Close() error
}

// FoundKey is what a KeyFinder found, for the checks after it.
type FoundKey struct {
	Key     crypto.Signer       // signs the test signature; nil when none found
	Signer  signer.Signer       // Key with its chain; nil when unusable
	Chain   []*x509.Certificate // leaf first; without a login, that of the certificate the selection points at
	CertErr error               // why the token's certificate for the key does not fit it
	NoLogin bool                // the token was not logged in: Chain may not be the key's
}

// Thresholds of the checks.
const (
	expiryWarn = 60 * 24 * time.Hour  // validity warns when the certificate expires sooner
	skewWarn   = 2 * time.Second      // clock warns beyond this
	skewFail   = 5 * time.Second      // clock fails beyond this
	keyAgeWarn = 335 * 24 * time.Hour // registered-key warns at this key-set age: a registered key is valid for a year (MP-121)
)

// run holds what the checks found so far.
type run struct {
	cfg     Config
	now     func() time.Time
	timeout time.Duration
	results Results

	key  FoundKey
	cert *x509.Certificate // key.Chain[0], the leaf the checks judge
	envr *grant.Environment
	meta *metadata // the fetched metadata, once fetched
}

// Run runs cfg.Key's checks, then signature, certificate, validity,
// key-usage, issuer, org-number, environment, metadata, clock,
// token-request and registered-key, one Result each, never stopping early.
func Run(ctx context.Context, cfg Config) Results {
	r := &run{cfg: cfg, now: cfg.Now, timeout: cmp.Or(max(cfg.Timeout, 0), 30*time.Second)}
	r.cfg.ClientID = strings.TrimSpace(cfg.ClientID)
	if r.now == nil {
		r.now = time.Now
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
	for _, check := range []func(context.Context) Result{
		r.checkSignature, r.checkCertificate,
		r.needsCert("validity", r.checkValidity), r.needsCert("key-usage", r.checkKeyUsage),
		r.needsCert("issuer", r.checkIssuer), r.needsCert("org-number", r.checkOrgNumber),
		r.checkEnvironment, r.checkMetadata, r.checkClock, r.checkTokenRequest, r.checkRegisteredKey,
	} {
		if res := check(ctx); res.Check != "" {
			r.add(res)
		}
	}
	return r.results
}

func (r *run) add(res Result) {
	res = res.normalize()
	r.results = append(r.results, res)
	if r.cfg.Report != nil {
		r.cfg.Report(res)
	}
}

func ok(check, msg string) Result { return Result{Check: check, Status: OK, Message: msg} }
func warn(check, msg, hint string) Result {
	return Result{Check: check, Status: Warn, Message: msg, Hint: hint}
}
func skip(check, msg string) Result { return Result{Check: check, Status: Skip, Message: msg} }
func fail(check string, class Class, err error, msg, hint string) Result {
	return Result{Check: check, Status: Fail, Message: msg, Hint: hint, Class: class, Err: err}
}

// Status is the outcome of one check.
type Status string

// The statuses of a check.
const (
	OK   Status = "ok"   // nothing wrong
	Warn Status = "warn" // works, but something needs attention (see Hint)
	Fail Status = "fail" // a token cannot be had this way (see Hint and Class)
	Skip Status = "skip" // not run: what it needs is missing (see Message)
)

// Class is the kind of problem a failed check found; mp-hsm doctor exits with the code in parentheses.
type Class int

// The classes of failures.
const (
	ClassNone        Class = iota // the check did not fail
	ClassInternal                 // an unexpected error (1)
	ClassUsage                    // bad configuration or input (2)
	ClassToken                    // module, token, PIN, key or certificate (3)
	ClassRefused                  // Maskinporten refused, or would refuse, the grant (4)
	ClassUnavailable              // Maskinporten unreachable or failing (5)
)

// Result is what one check found. Its JSON form is what mp-hsm doctor
// --output json prints, part of the command-line contract.
type Result struct {
	Check   string `json:"check"`   // such as "pin" or "token-request"
	Status  Status `json:"status"`  // the outcome
	Message string `json:"message"` // one line; never a PIN, grant or token
	Hint    string `json:"hint"`    // what to do, naming mp-hsm's commands and flags
	Class   Class  `json:"-"`       // for a failure, the kind of problem
	Err     error  `json:"-"`       // the error that failed the check, for errors.Is/As
}

// Results are the results of a Run, in the order the checks ran.
type Results []Result

// Count returns how many results have status s.
func (rs Results) Count(s Status) int {
	n := 0
	for _, r := range rs {
		if r.Status == s {
			n++
		}
	}
	return n
}

// FirstFailure returns the first failed result, or nil when none failed.
func (rs Results) FirstFailure() *Result {
	for i := range rs {
		if rs[i].Status == Fail {
			return &rs[i]
		}
	}
	return nil
}

// Failed returns a failed result of check for err, with err's class (see ClassOf) or def when err has none.
func Failed(check string, def Class, err error, hint string) Result {
	return Result{Check: check, Status: Fail, Message: err.Error(), Hint: hint, Class: ClassOf(err, def), Err: err}
}

// ClassOf returns the class of err (ClassNone for nil), or def when the
// sentinels of grant, signer and pkcs11uri do not tell.
func ClassOf(err error, def Class) Class {
	switch {
	case err == nil:
		return ClassNone
	case errors.Is(err, grant.ErrInvalidRequest), errors.Is(err, pkcs11uri.ErrInvalid),
		errors.Is(err, grant.ErrInvalidConfig) && !errors.Is(err, grant.ErrEnvironmentMismatch):
		return ClassUsage
	case errors.Is(err, grant.ErrRefused):
		return ClassRefused
	case errors.Is(err, grant.ErrUnavailable), errors.Is(err, grant.ErrBadResponse),
		errors.Is(err, context.DeadlineExceeded):
		return ClassUnavailable
	case errors.Is(err, signer.ErrKeyTooSmall), errors.Is(err, signer.ErrCertificateMismatch),
		errors.Is(err, signer.ErrUnsupportedKey), errors.Is(err, grant.ErrEnvironmentMismatch):
		return ClassToken
	}
	return def
}

// normalize keeps message and hint on one line each; a failure is never ClassNone.
func (r Result) normalize() Result {
	oneLine := strings.NewReplacer("\r", "", "\n", "; ")
	r.Message = oneLine.Replace(strings.TrimSpace(r.Message))
	r.Hint = oneLine.Replace(strings.TrimSpace(r.Hint))
	if r.Status == Fail && r.Class == ClassNone {
		r.Class = ClassInternal
	}
	return r
}
