package doctor

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/inspect"
)

// checkEnvironment chooses the environment and checks it against the
// certificate.
func (r *run) checkEnvironment(ctx context.Context) Result {
	const check = "environment"
	cfg := r.cfg
	if cfg.Environment == nil && cfg.WellKnown != "" {
		m := r.fetchMetadata(ctx, cfg.WellKnown)
		if m.err != nil {
			r.envFail = true
			return skip(check, fmt.Sprintf("the metadata at %s could not be read (see the metadata check)", cfg.WellKnown))
		}
		envr := m.env
		if err := grant.CheckEnvironment(envr, r.key.Chain); err != nil {
			r.envFail = true
			return Failed(check, ClassToken, err, "use the certificate for that environment, or the other environment's metadata")
		}
		r.envr = &envr
		return ok(check, fmt.Sprintf("issuer %s from the metadata at %s%s", envr.Issuer, cfg.WellKnown, r.fitsCert(envr)))
	}
	choose := cfg.Environment
	if choose == nil {
		choose = fromCertificate
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	envr, how, err := choose(ctx, r.key.Chain)
	if err == nil {
		err = grant.CheckEnvironment(envr, r.key.Chain)
	}
	if err != nil {
		r.envFail = true
		hint := "give --env test or --env prod, or --well-known URL"
		var me *grant.EnvironmentMismatchError
		if errors.As(err, &me) {
			hint = fmt.Sprintf("a %s certificate works only in %s: give --env %s, or use a %s certificate", me.CertificateEnvironment, me.CertificateEnvironment, me.CertificateEnvironment, me.Environment)
		}
		return Failed(check, ClassUsage, err, hint)
	}
	r.envr = &envr
	name := envr.Name
	if name == "" {
		name = "custom"
	}
	return ok(check, fmt.Sprintf("%s (issuer %s), from %s%s", name, envr.Issuer, how, r.fitsCert(envr)))
}

// fromCertificate is the default EnvironmentFunc: the issuing CA's.
func fromCertificate(_ context.Context, chain []*x509.Certificate) (grant.Environment, string, error) {
	if len(chain) == 0 {
		return grant.Environment{}, "", errors.New("no certificate to tell the environment from: give the environment")
	}
	envr, err := grant.EnvironmentForCertificate(chain[0])
	if err != nil {
		return grant.Environment{}, "", fmt.Errorf("cannot tell the environment from the certificate: %w", err)
	}
	return envr, "certificate issued by " + chain[0].Issuer.CommonName, nil
}

// fitsCert says whether the certificate's CA tells the same environment.
func (r *run) fitsCert(envr grant.Environment) string {
	if r.cert == nil {
		return ""
	}
	if ce, err := grant.EnvironmentForCertificate(r.cert); err == nil && (envr.Name == "test" || envr.Name == "prod") && ce.Name == envr.Name {
		return "; the certificate fits"
	}
	return ""
}

// metadata is a metadata fetch and the server's Date header.
type metadata struct {
	url        string
	env        grant.Environment
	err        error
	date       time.Time // zero without a Date header
	start, end time.Time // local clock around the request
}

// datesTransport records the Date header and timing of the last answer;
// one fetch's requests are sequential.
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
	var hc http.Client
	if r.cfg.HTTPClient != nil {
		hc = *r.cfg.HTTPClient
	}
	if hc.Timeout == 0 {
		hc.Timeout = r.timeout
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	hc.Transport = &datesTransport{base: base, m: m, now: r.now}
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
		iss := r.envr.Issuer
		if !strings.HasSuffix(iss, "/") {
			iss += "/"
		}
		url = iss + ".well-known/oauth-authorization-server"
	}
	m := r.fetchMetadata(ctx, url)
	if m.err != nil {
		class := ClassUnavailable
		if errors.Is(m.err, grant.ErrInvalidConfig) {
			class = ClassUsage
		}
		return fail(check, class, m.err, m.err.Error(),
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
	case skew.Abs() > SkewFail:
		return fail(check, ClassRefused, nil, msg, hint)
	case skew.Abs() > SkewWarn:
		return warn(check, msg, hint)
	default:
		return ok(check, "within "+inspect.Duration(SkewWarn)+" of the server's clock (Date header)")
	}
}
