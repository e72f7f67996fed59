package doctor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/inspect"
	"github.com/mp-hsm/mp-hsm/signer"
)

// checkEnvironment chooses the environment and checks it against the certificate.
func (r *run) checkEnvironment(ctx context.Context) Result {
	const check = "environment"
	cfg := r.cfg
	var envr grant.Environment
	var how string
	var err error
	switch {
	case cfg.Environment != nil:
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		defer cancel()
		envr, how, err = cfg.Environment(ctx, r.key.Chain)
	case cfg.WellKnown != "":
		m := r.fetchMetadata(ctx, cfg.WellKnown)
		if m.err != nil {
			return skip(check, fmt.Sprintf("the metadata at %s could not be read (see the metadata check)", cfg.WellKnown))
		}
		envr, how = m.env, "the metadata at "+cfg.WellKnown
	case r.cert == nil:
		err = errors.New("no certificate to tell the environment from: give the environment")
	default: // the issuing CA's
		if envr, err = grant.EnvironmentForCertificate(r.cert); err != nil {
			err = fmt.Errorf("cannot tell the environment from the certificate: %w", err)
		}
		how = "certificate issued by " + r.cert.Issuer.CommonName
	}
	if err == nil {
		err = grant.CheckEnvironment(envr, r.key.Chain)
	}
	if err != nil {
		hint := "give --env test or --env prod, or --well-known URL"
		var me *grant.EnvironmentMismatchError
		if errors.As(err, &me) {
			hint = fmt.Sprintf("a %s certificate works only in %s: give --env %s, or use a %s certificate", me.CertificateEnvironment, me.CertificateEnvironment, me.CertificateEnvironment, me.Environment)
		}
		return Failed(check, ClassUsage, err, hint)
	}
	r.envr = &envr
	fits := "" // whether the certificate's CA tells the same environment
	if ce, err := grant.EnvironmentForCertificate(r.cert); err == nil && ce.Name == envr.Name {
		fits = "; the certificate fits"
	}
	return ok(check, fmt.Sprintf("%s (issuer %s), from %s%s", cmp.Or(envr.Name, "custom"), envr.Issuer, how, fits))
}

// metadata is a metadata fetch and the server's Date header.
type metadata struct {
	url        string
	env        grant.Environment
	err        error
	date       time.Time // zero without a Date header
	start, end time.Time // local clock around the request
}

// datesTransport records the Date header and timing of the last answer; one fetch's requests are sequential.
type datesTransport struct {
	base http.RoundTripper
	m    *metadata
	now  func() time.Time
}

func (t *datesTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := t.now()
	resp, err := t.base.RoundTrip(req)
	if err == nil {
		t.m.start, t.m.end = start, t.now()
		t.m.date, _ = http.ParseTime(resp.Header.Get("Date")) // zero without one
	}
	return resp, err
}

// fetchMetadata fetches the metadata at url once per run.
func (r *run) fetchMetadata(ctx context.Context, url string) *metadata {
	if r.meta != nil && r.meta.url == url {
		return r.meta
	}
	m := &metadata{url: url}
	hc := *cmp.Or(r.cfg.HTTPClient, &http.Client{}) // a copy: its Transport is replaced
	hc.Timeout = cmp.Or(hc.Timeout, r.timeout)
	hc.Transport = &datesTransport{base: cmp.Or(hc.Transport, http.DefaultTransport), m: m, now: r.now}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	m.env, m.err = grant.Discover(ctx, &hc, url, r.cfg.AllowInsecure)
	r.meta = m
	return m
}

// checkMetadata fetches the metadata and compares it with the environment.
func (r *run) checkMetadata(ctx context.Context) Result {
	const check = "metadata"
	url := r.cfg.WellKnown
	if url == "" {
		if r.envr == nil {
			return skip(check, "needs the environment")
		}
		url = strings.TrimSuffix(r.envr.Issuer, "/") + "/.well-known/oauth-authorization-server"
	}
	m := r.fetchMetadata(ctx, url)
	if m.err != nil {
		return Failed(check, ClassUnavailable, m.err,
			"check the network, a proxy (HTTPS_PROXY, NO_PROXY) and firewalls, and that the URL is Maskinporten's (status.digdir.no)")
	}
	if r.envr != nil && m.env.Issuer != r.envr.Issuer {
		return fail(check, ClassUsage, nil, fmt.Sprintf("the metadata at %s names issuer %s, but grants would carry aud %s", url, m.env.Issuer, r.envr.Issuer),
			"give --well-known "+url+" so that the grant's aud is the server's issuer, or fix --issuer")
	}
	if r.envr != nil && m.env.TokenEndpoint != r.envr.TokenEndpoint {
		return warn(check, fmt.Sprintf("the metadata at %s names token endpoint %s, but grants would go to %s", url, m.env.TokenEndpoint, r.envr.TokenEndpoint),
			"give --well-known "+url+" to use the server's own token endpoint")
	}
	return ok(check, fmt.Sprintf("%s answers: issuer %s, token endpoint %s", url, m.env.Issuer, m.env.TokenEndpoint))
}

// checkClock compares the local clock with the metadata's Date header.
func (r *run) checkClock(context.Context) Result {
	const check = "clock"
	m := r.meta
	switch {
	case m == nil || m.err != nil:
		return skip(check, "needs the metadata")
	case m.date.IsZero():
		return skip(check, "the server sent no Date header")
	}
	// Date has whole seconds: the server's clock was in [date, date+1s)
	// while the local clock was between start and end.
	mid := m.start.Add(m.end.Sub(m.start) / 2)
	skew := m.date.Add(500 * time.Millisecond).Sub(mid)
	secs := math.Round(skew.Abs().Seconds())
	dir := "behind"
	if skew < 0 {
		dir = "ahead of"
	}
	msg := fmt.Sprintf("the local clock is %.0f s %s the server's (Date header of %s)", secs, dir, m.url)
	const hint = "synchronise the clock with NTP (timedatectl set-ntp true): Maskinporten refuses grants issued in the future (\"Issue time is after now\") and expired ones (MP-130)"
	switch {
	case skew.Abs() > skewFail:
		return fail(check, ClassRefused, nil, msg, hint)
	case skew.Abs() > skewWarn:
		return warn(check, msg, hint)
	default:
		return ok(check, "within "+inspect.Duration(skewWarn)+" of the server's clock (Date header)")
	}
}

// checkTokenRequest asks Maskinporten for a real token, and explains a refusal. The token is never shown.
func (r *run) checkTokenRequest(ctx context.Context) Result {
	const check = "token-request"
	cfg := r.cfg
	if len(cfg.Request.Scopes) == 0 || cfg.ClientID == "" {
		return skip(check, "give --client-id and --scope to try a real token request")
	}
	switch {
	case r.key.Signer == nil:
		return skip(check, "needs the key and its certificate")
	case r.envr == nil:
		return skip(check, "needs the environment")
	case r.meta != nil && r.meta.err != nil:
		return skip(check, "the metadata could not be read")
	}
	validate := cfg.CheckRequest
	if validate == nil {
		validate = grant.Request.Validate
	}
	if err := validate(cfg.Request); err != nil {
		return Failed(check, ClassUsage, err, "fix the request flags")
	}
	if cfg.KeyID == "" && len(r.key.Signer.Chain()) == 0 {
		return fail(check, ClassToken, nil, "the key has no certificate on the token, so no x5c can be sent: register the key (mp-hsm jwk) and give its --kid, or add the certificate",
			"fix the flags named")
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	gc := &grant.Config{ClientID: cfg.ClientID, Signer: r.key.Signer, Algorithm: cfg.Algorithm, KeyID: cfg.KeyID,
		Environment: *r.envr, AllowInsecure: cfg.AllowInsecure, HTTPClient: cfg.HTTPClient, Logger: cfg.Logger}
	tok, err := gc.Exchange(ctx, cfg.Request)
	if err != nil {
		class := ClassOf(err, ClassUnavailable)
		hint := "check the network and Maskinporten's status (status.digdir.no)"
		if class != ClassUnavailable {
			// Refused before anything was sent (an expired certificate,
			// a bad setting): the network is not to blame.
			hint = "nothing was sent to Maskinporten: fix what the message (and any failed check above) says"
		}
		var te *grant.TokenError // its message has the code, description and any clock skew
		if errors.As(err, &te) {
			hint = cmp.Or(te.Hint, "see Maskinporten's error documentation for the code")
		}
		return fail(check, class, err, err.Error(), hint)
	}
	return ok(check, fmt.Sprintf("Maskinporten issued a token for scope %q, valid %d s (not shown)", tok.Scope, tok.ExpiresIn))
}

// RegisteredKeysFunc reads the client's registered key set through the
// self-service API, authenticating with s (the key found) or a key beside it.
type RegisteredKeysFunc func(ctx context.Context, s signer.Signer) (*admin.KeySet, error)

// checkRegisteredKey looks the kid up in the client's registered keys. The
// API dates only the set, so a set last changed keyAgeWarn ago warns.
func (r *run) checkRegisteredKey(ctx context.Context) Result {
	const check = "registered-key"
	cfg := r.cfg
	if cfg.RegisteredKeys == nil {
		return Result{} // not run
	}
	switch {
	case cfg.KeyID == "" || cfg.ClientID == "":
		return skip(check, "give --client-id and --kid to look the key up in the self-service API")
	case r.key.Signer == nil:
		return skip(check, "needs the key and its certificate")
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	set, err := cfg.RegisteredKeys(ctx, r.key.Signer)
	if err != nil {
		class := ClassOf(err, ClassUnavailable)
		var ae *admin.APIError
		if errors.As(err, &ae) && ae.Status < 500 {
			class = ClassRefused
		}
		return fail(check, class, err, err.Error(), "check --admin-client-id and --admin-api, that the self-service client has idporten:dcr.read, "+
			"and that its key (--admin-key-id or --admin-key-label, else the key checked) has the enterprise certificate")
	}
	if !slices.Contains(set.Kids(), cfg.KeyID) {
		return fail(check, ClassRefused, nil, fmt.Sprintf("kid %q is not registered on client %s (it has: %s)", cfg.KeyID, cfg.ClientID, strings.Join(set.Kids(), ", ")),
			fmt.Sprintf("register it: mp-hsm jwk --kid %s | mp-hsm admin keys add --client-id %s -", cfg.KeyID, cfg.ClientID))
	}
	day := "at a date the API did not give"
	if !set.LastUpdated.IsZero() {
		day = "on " + set.LastUpdated.UTC().Format("2006-01-02")
		if age := r.now().Sub(set.LastUpdated); age >= keyAgeWarn {
			return warn(check, fmt.Sprintf("kid %q is registered on client %s, but the key set was last changed %s (%s ago): every key in it is that old or older, "+
				"and a registered key is valid for a year (MP-121)", cfg.KeyID, cfg.ClientID, day, inspect.Duration(age)),
				fmt.Sprintf("rotate: mp-hsm admin keys rotate --client-id %s --label NEW --scope SCOPE --remove %s", cfg.ClientID, cfg.KeyID))
		}
	}
	return ok(check, fmt.Sprintf("kid %q is registered on client %s (key set last changed %s)", cfg.KeyID, cfg.ClientID, day))
}
