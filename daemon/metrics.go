package daemon

import (
	"crypto"
	"errors"
	"io"
	"math"
	"sync"
	"time"

	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/tokenerr"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the daemon's Prometheus metrics, named mphsm_*; each Help
// says what it counts.
type metrics struct {
	requests                        *prometheus.CounterVec
	requestsOK                      prometheus.Counter // requests{result="ok"}
	cacheHits, cacheMisses          prometheus.Counter
	upstream, refreshes, reconnects *prometheus.CounterVec
	signSeconds                     prometheus.Histogram
	signErrors, faults              prometheus.Counter
	authFailures, auditFailures     prometheus.Counter
	ready, storeSize, certExpiry    prometheus.GaugeFunc
	inflight, queued                prometheus.Gauge
	upstreamTime                    *prometheus.HistogramVec
	clientRequests, clientRefusals  *prometheus.CounterVec
	clientsMu                       sync.Mutex
	clients                         map[string]*clientMetrics // by client name
}

// clientMetrics are one client's series, made once per client name so
// that a request counts without looking them up.
type clientMetrics struct {
	name                            string
	issued, cached, refused, failed prometheus.Counter
}

// noClient names, in the per-client metrics, the requests refused before
// a client was chosen: a name a caller sent is never a label.
const noClient = "(none)"

// client returns the series of the client called name.
func (m *metrics) client(name string) *clientMetrics {
	m.clientsMu.Lock()
	defer m.clientsMu.Unlock()
	if cm := m.clients[name]; cm != nil {
		return cm
	}
	l := func(o string) prometheus.Counter { return m.clientRequests.WithLabelValues(name, o) }
	cm := &clientMetrics{name, l(outcomeIssued), l(outcomeCached), l(outcomeRefused), l(outcomeFailed)}
	if m.clients == nil {
		m.clients = map[string]*clientMetrics{}
	}
	m.clients[name] = cm
	return cm
}

// count counts a request answered for cl (nil before one was chosen)
// with outcome, and a refusal's reason: why the caller was refused, or the
// OAuth 2 error code.
func (m *metrics) count(cl *client, outcome string, oe *oauthError) {
	cm := m.client(noClient)
	if cl != nil {
		cm = cl.m
	}
	switch outcome {
	case outcomeIssued:
		cm.issued.Inc()
	case outcomeCached:
		cm.cached.Inc()
	case outcomeRefused:
		cm.refused.Inc()
		reason := oe.reason
		if reason == "" {
			reason = oe.code
		}
		m.clientRefusals.WithLabelValues(cm.name, reason).Inc()
	default:
		cm.failed.Inc()
	}
}

// collectors are the metrics to register.
func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.cacheHits, m.cacheMisses, m.upstream, m.upstreamTime, m.refreshes,
		m.signSeconds, m.signErrors, m.reconnects, m.faults, m.inflight, m.queued, m.authFailures, m.auditFailures,
		m.ready, m.storeSize, m.certExpiry, m.clientRequests, m.clientRefusals}
}

func newMetrics(s *Server) *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	vec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	gaugeFunc := func(name, help string, f func() float64) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m := &metrics{
		requests:    vec("mphsm_token_requests_total", "Token requests by result: ok, or the OAuth 2 error code answered.", "result"),
		cacheHits:   counter("mphsm_cache_hits_total", "Token requests answered from the cache."),
		cacheMisses: counter("mphsm_cache_misses_total", "Token requests that could not be answered from the cache."),
		upstream: vec("mphsm_maskinporten_requests_total",
			"HTTP requests to Maskinporten (endpoint=token) and Altinn (endpoint=altinn) by status code, or status=error for network failures.", "endpoint", "status"),
		upstreamTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mphsm_maskinporten_request_duration_seconds",
			Help:    "Duration of HTTP requests to Maskinporten and Altinn.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"endpoint"}),
		refreshes: vec("mphsm_background_refreshes_total", "Tokens refreshed in the background before they expired, by result.", "result"),
		signSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mphsm_signature_duration_seconds",
			Help:    "Latency of grant signatures on the card or HSM.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		signErrors: counter("mphsm_signature_errors_total", "Grant signatures that failed."),
		reconnects: vec("mphsm_signer_opens_total",
			"Attempts to open the key (start, reconnect, reload) by result: ok, error, pin (a refused PIN; not retried).", "result"),
		faults:       counter("mphsm_token_faults_total", "Card or HSM faults noticed (token removed, session closed, device error)."),
		inflight:     gauge("mphsm_exchanges_in_flight", "Exchanges with Maskinporten or Altinn in flight (at most MaxConcurrent)."),
		authFailures: counter("mphsm_auth_failures_total", "Token requests on TCP refused for want of the right client id and secret."),
		auditFailures: counter("mphsm_audit_write_failures_total",
			"Audit lines that could not be written whole (a full disk, an I/O error); each token among them was refused with 503 unless the audit failure policy is serve."),
		queued: gauge("mphsm_exchanges_queued",
			"Exchanges waiting for one of the MaxConcurrent slots, or for their caller's share of them (MaxConcurrentPerCaller)."),
		clientRequests: vec("mphsm_client_requests_total",
			"Token requests by client (its name; (none) before one was chosen) and outcome: issued, cached, refused (4xx), failed (5xx).", "client", "outcome"),
		clientRefusals: vec("mphsm_client_refusals_total",
			"Token requests refused (4xx) by client and reason: unknown_client, not_admitted, no_client, ambiguous_client, bad_credentials, or the OAuth 2 error code.", "client", "reason"),
		ready: gaugeFunc("mphsm_ready", "1 when the daemon is logged in and able to sign, else 0.", func() float64 {
			if ok, _ := s.Ready(); ok {
				return 1
			}
			return 0
		}),
		storeSize: gaugeFunc("mphsm_token_store_keys", "Keys (distinct requests) in the token cache.", func() float64 { return float64(s.cache.len()) }),
		certExpiry: gaugeFunc("mphsm_certificate_expiry_seconds",
			"Seconds until the key's certificate expires (negative once expired); NaN without a certificate.", func() float64 {
				if leaf := s.lastLeaf.Load(); leaf != nil {
					return time.Until(leaf.NotAfter).Seconds()
				}
				return math.NaN()
			}),
	}
	// Pre-create the common series so that they are exported at zero.
	m.requestsOK = m.requests.WithLabelValues("ok")
	m.refreshes.WithLabelValues("ok")
	m.refreshes.WithLabelValues("error")
	return m
}

// meteredSigner measures signatures and reports card faults to the server.
type meteredSigner struct {
	signer.Signer
	c *conn
	s *Server
}

// Sign signs on the token, observes the latency and reports a card or HSM
// fault, which starts the reconnect loop, or a PIN refused (a context
// login), which stops signing until Reload.
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

// isDeviceFault reports errors that a new session, or the token coming
// back, may cure: tokenerr's transient kinds (a removed card, a broken
// session, a device error, a lost login, a stale key handle) and
// ErrClosed, a token closed under the daemon.
func isDeviceFault(err error) bool {
	return !tokenerr.IsPINRefused(err) && (tokenerr.Transient(err) || errors.Is(err, tokenerr.ErrClosed))
}
