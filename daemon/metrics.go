package daemon

import (
	"cmp"
	"crypto"
	"errors"
	"io"
	"math"
	"slices"
	"time"

	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/tokenerr"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the daemon's Prometheus metrics, named mphsm_*; each Help says what it counts.
type metrics struct {
	all                             []prometheus.Collector // to register
	requests                        *prometheus.CounterVec
	requestsOK                      prometheus.Counter // requests{result="ok"}
	cacheHits, cacheMisses          prometheus.Counter
	upstream, refreshes, reconnects *prometheus.CounterVec
	signSeconds                     prometheus.Histogram
	signErrors, faults              prometheus.Counter
	authFailures, auditFailures     prometheus.Counter
	inflight, queued                prometheus.Gauge
	upstreamTime                    *prometheus.HistogramVec
	clientRequests, clientRefusals  *prometheus.CounterVec
	noClient                        *clientMetrics // the requests refused before a client was chosen
}

// noClient labels requests refused before a client was chosen: a name a caller sent is never a label.
const noClient = "(none)"

// clientMetrics are one client's series by outcome, looked up once, not per request.
type clientMetrics struct {
	name     string
	outcomes [len(outcomes)]prometheus.Counter
}

var outcomes = [...]string{outcomeIssued, outcomeCached, outcomeRefused, outcomeFailed}

// client returns the series of the client called name.
func (m *metrics) client(name string) *clientMetrics {
	cm := &clientMetrics{name: name}
	for i, o := range outcomes {
		cm.outcomes[i] = m.clientRequests.WithLabelValues(name, o)
	}
	return cm
}

// count counts a request answered for cl (nil before one was chosen) with outcome
// and oe (nil for a token); a refusal by why the caller was refused, or the code.
func (m *metrics) count(cl *client, outcome string, oe *oauthError) {
	if oe == nil {
		m.requestsOK.Inc()
	} else {
		m.requests.WithLabelValues(oe.code).Inc()
	}
	cm := m.noClient
	if cl != nil {
		cm = cl.m
	}
	cm.outcomes[slices.Index(outcomes[:], outcome)].Inc()
	if outcome == outcomeRefused {
		m.clientRefusals.WithLabelValues(cm.name, cmp.Or(oe.reason, oe.code)).Inc()
	}
}

// reg adds c to the metrics to register.
func reg[C prometheus.Collector](m *metrics, c C) C {
	m.all = append(m.all, c)
	return c
}

func newMetrics(s *Server) *metrics {
	m := &metrics{}
	type c = prometheus.CounterOpts
	type g = prometheus.GaugeOpts
	counter := func(name, help string) prometheus.Counter {
		return reg(m, prometheus.NewCounter(c{Name: name, Help: help}))
	}
	vec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return reg(m, prometheus.NewCounterVec(c{Name: name, Help: help}, labels))
	}
	gauge := func(name, help string, f func() float64) {
		reg(m, prometheus.NewGaugeFunc(g{Name: name, Help: help}, f))
	}
	m.requests = vec("mphsm_token_requests_total", "Token requests by result: ok, or the OAuth 2 error code answered.", "result")
	m.requestsOK = m.requests.WithLabelValues("ok")
	m.cacheHits = counter("mphsm_cache_hits_total", "Token requests answered from the cache.")
	m.cacheMisses = counter("mphsm_cache_misses_total", "Token requests that could not be answered from the cache.")
	m.upstream = vec("mphsm_maskinporten_requests_total",
		"HTTP requests to Maskinporten (endpoint=token) and Altinn (endpoint=altinn) by status code, or status=error for network failures.",
		"endpoint", "status")
	m.upstreamTime = reg(m, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mphsm_maskinporten_request_duration_seconds",
		Help:    "Duration of HTTP requests to Maskinporten and Altinn.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"endpoint"}))
	m.refreshes = vec("mphsm_background_refreshes_total", "Tokens refreshed in the background before they expired, by result.", "result")
	m.refreshes.WithLabelValues("ok") // exported at zero
	m.refreshes.WithLabelValues("error")
	m.signSeconds = reg(m, prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mphsm_signature_duration_seconds",
		Help:    "Latency of grant signatures on the card or HSM.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}))
	m.signErrors = counter("mphsm_signature_errors_total", "Grant signatures that failed.")
	m.reconnects = vec("mphsm_signer_opens_total", "Attempts to open the key (start, reconnect, reload) by result: ok, error, pin (a refused PIN; not retried).", "result")
	m.faults = counter("mphsm_token_faults_total", "Card or HSM faults noticed (token removed, session closed, device error).")
	m.inflight = reg(m, prometheus.NewGauge(g{Name: "mphsm_exchanges_in_flight", Help: "Exchanges with Maskinporten or Altinn in flight (at most MaxConcurrent)."}))
	m.queued = reg(m, prometheus.NewGauge(g{Name: "mphsm_exchanges_queued",
		Help: "Exchanges waiting for one of the MaxConcurrent slots, or for their caller's share of them (MaxConcurrentPerCaller)."}))
	m.authFailures = counter("mphsm_auth_failures_total", "Token requests on TCP refused for want of the right client id and secret.")
	m.auditFailures = counter("mphsm_audit_write_failures_total",
		"Audit lines that could not be written whole (a full disk, an I/O error); each token among them was refused with 503 unless the audit failure policy is serve.")
	m.clientRequests = vec("mphsm_client_requests_total",
		"Token requests by client (its name; (none) before one was chosen) and outcome: issued, cached, refused (4xx), failed (5xx).", "client", "outcome")
	m.noClient = m.client(noClient)
	m.clientRefusals = vec("mphsm_client_refusals_total",
		"Token requests refused (4xx) by client and reason: unknown_client, not_admitted, no_client, ambiguous_client, bad_credentials, or the OAuth 2 error code.",
		"client", "reason")
	gauge("mphsm_ready", "1 when the daemon is logged in and able to sign, else 0.", func() float64 {
		if ok, _ := s.Ready(); ok {
			return 1
		}
		return 0
	})
	gauge("mphsm_token_store_keys", "Keys (distinct requests) in the token cache.", func() float64 { return float64(s.cache.len()) })
	gauge("mphsm_certificate_expiry_seconds", "Seconds until the key's certificate expires (negative once expired); NaN without a certificate.", func() float64 {
		if leaf := s.lastLeaf.Load(); leaf != nil {
			return time.Until(leaf.NotAfter).Seconds()
		}
		return math.NaN()
	})
	return m
}

// meteredSigner measures signatures and reports card faults to the server.
type meteredSigner struct {
	signer.Signer
	c *conn
	s *Server
}

// Sign signs on the token, observes the latency and reports a card or HSM fault
// (reconnect) or a PIN refused (a context login: no signing until Reload).
func (ms *meteredSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	start := time.Now()
	sig, err := ms.Signer.Sign(rand, digest, opts)
	ms.s.metrics.signSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		ms.s.metrics.signErrors.Inc()
		if isDeviceFault(err) || tokenerr.IsPINRefused(err) {
			ms.s.fault(ms.c, err)
		}
	}
	return sig, err
}

// isDeviceFault reports errors a new session or the token's return may cure:
// tokenerr's transient kinds (a removed card, a broken session, a device error, a
// lost login, a stale key handle) and ErrClosed, a token closed under the daemon.
func isDeviceFault(err error) bool {
	return !tokenerr.IsPINRefused(err) && (tokenerr.Transient(err) || errors.Is(err, tokenerr.ErrClosed))
}
