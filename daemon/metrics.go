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

// metrics are the daemon's Prometheus metrics. Their names start with
// mphsm_.
type metrics struct {
	requests      *prometheus.CounterVec   // result: ok or the OAuth 2 error code
	requestsOK    prometheus.Counter       // requests{result="ok"}
	cacheHits     prometheus.Counter       // token requests answered from the cache
	cacheMisses   prometheus.Counter       // token requests that waited for an exchange
	upstream      *prometheus.CounterVec   // endpoint (token, altinn), status (HTTP code or "error")
	refreshes     *prometheus.CounterVec   // result: ok, error
	signSeconds   prometheus.Histogram     // signature latency
	signErrors    prometheus.Counter       // failed signatures
	reconnects    *prometheus.CounterVec   // result: ok, error, pin
	faults        prometheus.Counter       // card or HSM faults noticed
	ready         prometheus.GaugeFunc     // 1 when ready
	storeSize     prometheus.GaugeFunc     // cached keys
	certExpiry    prometheus.GaugeFunc     // seconds until the leaf certificate expires
	inflight      prometheus.Gauge         // exchanges holding a slot
	queued        prometheus.Gauge         // exchanges waiting for a slot
	authFailures  prometheus.Counter       // failed client authentication on TCP
	auditFailures prometheus.Counter       // audit lines that could not be written whole
	upstreamTime  *prometheus.HistogramVec // endpoint: duration of calls

	clientRequests *prometheus.CounterVec // client, outcome: issued, cached, refused, failed
	clientRefusals *prometheus.CounterVec // client, reason
	clientsMu      sync.Mutex
	clients        map[string]*clientMetrics // by client name
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
	cm := &clientMetrics{name: name,
		issued:  m.clientRequests.WithLabelValues(name, outcomeIssued),
		cached:  m.clientRequests.WithLabelValues(name, outcomeCached),
		refused: m.clientRequests.WithLabelValues(name, outcomeRefused),
		failed:  m.clientRequests.WithLabelValues(name, outcomeFailed),
	}
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
	var cm *clientMetrics
	if cl != nil {
		cm = cl.m
	} else {
		cm = m.client(noClient)
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
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mphsm_token_requests_total",
			Help: "Token requests by result: ok, or the OAuth 2 error code answered.",
		}, []string{"result"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mphsm_cache_hits_total",
			Help: "Token requests answered from the cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mphsm_cache_misses_total",
			Help: "Token requests that could not be answered from the cache.",
		}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mphsm_maskinporten_requests_total",
			Help: "HTTP requests to Maskinporten (endpoint=token) and Altinn (endpoint=altinn) by status code, or status=error for network failures.",
		}, []string{"endpoint", "status"}),
		upstreamTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mphsm_maskinporten_request_duration_seconds",
			Help:    "Duration of HTTP requests to Maskinporten and Altinn.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"endpoint"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mphsm_background_refreshes_total",
			Help: "Tokens refreshed in the background before they expired, by result.",
		}, []string{"result"}),
		signSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mphsm_signature_duration_seconds",
			Help:    "Latency of grant signatures on the card or HSM.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		signErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mphsm_signature_errors_total",
			Help: "Grant signatures that failed.",
		}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mphsm_signer_opens_total",
			Help: "Attempts to open the key (start, reconnect, reload) by result: ok, error, pin (a refused PIN; not retried).",
		}, []string{"result"}),
		faults: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mphsm_token_faults_total",
			Help: "Card or HSM faults noticed (token removed, session closed, device error).",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mphsm_exchanges_in_flight",
			Help: "Exchanges with Maskinporten or Altinn in flight (at most MaxConcurrent).",
		}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mphsm_auth_failures_total",
			Help: "Token requests on TCP refused for want of the right client id and secret.",
		}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mphsm_audit_write_failures_total",
			Help: "Audit lines that could not be written whole (a full disk, an I/O error); each token among them was refused with 503 unless the audit failure policy is serve.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mphsm_exchanges_queued",
			Help: "Exchanges waiting for one of the MaxConcurrent slots, or for their caller's share of them (MaxConcurrentPerCaller).",
		}),
	}
	m.clientRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mphsm_client_requests_total",
		Help: "Token requests by client (its name; (none) before one was chosen) and outcome: issued, cached, refused (4xx), failed (5xx).",
	}, []string{"client", "outcome"})
	m.clientRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mphsm_client_refusals_total",
		Help: "Token requests refused (4xx) by client and reason: unknown_client, not_admitted, no_client, ambiguous_client, bad_credentials, or the OAuth 2 error code.",
	}, []string{"client", "reason"})
	m.ready = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mphsm_ready",
		Help: "1 when the daemon is logged in and able to sign, else 0.",
	}, func() float64 {
		if ok, _ := s.Ready(); ok {
			return 1
		}
		return 0
	})
	m.storeSize = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mphsm_token_store_keys",
		Help: "Keys (distinct requests) in the token cache.",
	}, func() float64 { return float64(s.cache.len()) })
	m.certExpiry = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mphsm_certificate_expiry_seconds",
		Help: "Seconds until the key's certificate expires (negative once expired); NaN without a certificate.",
	}, func() float64 {
		if leaf := s.lastLeaf.Load(); leaf != nil {
			return time.Until(leaf.NotAfter).Seconds()
		}
		return math.NaN()
	})
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
// fault, which starts the reconnect loop.
func (ms *meteredSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	start := time.Now()
	sig, err := ms.Signer.Sign(rand, digest, opts)
	ms.s.metrics.signSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		ms.s.metrics.signErrors.Inc()
		if isDeviceFault(err) && !isPINError(err) {
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
	return tokenerr.Transient(err) || errors.Is(err, tokenerr.ErrClosed)
}

// isPINError reports a login the token refused, or refused to try: it is
// never retried.
func isPINError(err error) bool { return tokenerr.IsPINRefused(err) }

// isTransient reports open errors with which New starts anyway, not
// ready, and waits for the token.
func isTransient(err error) bool { return tokenerr.Transient(err) }
