package daemon

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ServeHTTP answers POST /token, GET /healthz, GET /readyz, GET /metrics
// and GET of the authorization server metadata (RFC 8414, at
// /.well-known/oauth-authorization-server and
// /.well-known/openid-configuration). Callers on a unix socket need no
// credentials; others must authenticate for /token (see
// Config.ClientSecret). On TCP, a request whose Host header does not name
// the daemon gets 421 (see Config.AllowedHosts).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !onUnixSocket(r) && !hostAllowed(r, s.settings()) {
		writeMisdirected(w)
		return
	}
	switch r.URL.Path {
	case "/token":
		s.serveTokenAnswered(w, r)
	case "/healthz":
		if getOnly(w, r) {
			writeText(w, http.StatusOK, "ok\n")
		}
	case "/readyz":
		if getOnly(w, r) {
			if ok, reason := s.Ready(); ok {
				writeText(w, http.StatusOK, "ready\n")
			} else {
				writeText(w, http.StatusServiceUnavailable, "not ready: "+reason+"\n")
			}
		}
	case "/metrics":
		if getOnly(w, r) {
			s.metricsH.ServeHTTP(w, r)
		}
	case metadataPath, oidcMetadataPath:
		s.serveMetadata(w, r)
	default:
		s.writeError(w, &oauthError{status: http.StatusNotFound, code: errInvalidRequest,
			description: "no such endpoint; the token endpoint is POST /token"})
	}
}

func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeText(w, http.StatusMethodNotAllowed, "method not allowed\n")
	return false
}

func writeText(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// bufPool holds request and answer buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// Header values shared by every answer, so that setting them allocates
// nothing.
var (
	hdrJSON    = []string{"application/json;charset=UTF-8"}
	hdrNoStore = []string{"no-store"}
	hdrNoCache = []string{"no-cache"}
)

func (s *Server) serveToken(w *answer, r *http.Request, st *settings) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.fail(w, &oauthError{status: http.StatusMethodNotAllowed, code: errInvalidRequest,
			description: "the token endpoint takes POST only"})
		return
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	body, err := readBody(w, r, (*bp)[:0])
	*bp = body[:0]
	if err != nil {
		s.fail(w, err)
		return
	}
	// The client is authenticated before the body's type and content are
	// judged, so that a caller without the right credentials learns only
	// invalid_client (RFC 6749 section 5.2). A body that is not a form
	// holds no credentials; a form with a fault still gives what it holds.
	isFormBody := isForm(r.Header.Get("Content-Type"))
	var form url.Values
	var formErr error
	if isFormBody {
		form, formErr = url.ParseQuery(string(body))
	}
	creds, twice := presentedCredentials(r, form)
	if twice != nil {
		s.fail(w, twice)
		return
	}
	w.form = form
	cl, err := s.admit(r, &creds, form, st)
	if err != nil {
		if oe := new(oauthError); errors.As(err, &oe) && oe.status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="mp-hsm"`)
		}
		s.fail(w, err)
		return
	}
	w.client = cl
	if !isFormBody {
		s.fail(w, badRequest(errInvalidRequest, "Content-Type must be application/x-www-form-urlencoded"))
		return
	}
	if formErr != nil {
		// Not formErr's text: it quotes the bad %-escape, which may be a
		// piece of the client_secret, and descriptions reach the audit log.
		s.fail(w, badRequest(errInvalidRequest, "the body is not a valid form: a '%' not followed by two hex digits, or a ';' between parameters"))
		return
	}
	req, err := parseRequest(form, cl, st.resources, (*bp)[:0])
	if err != nil {
		s.fail(w, err)
		return
	}
	w.req = req
	*bp = req.key[:0]
	// A key in the cache was validated when it was added: only a new key
	// is validated in full.
	e := s.cache.Lookup(req.key)
	if e == nil {
		if err := req.validate(); err != nil {
			s.fail(w, err)
			return
		}
		who := callerOf(r)
		f := newRequest(s, cl.Name, req.req, req.altinn, who)
		if req.altinn {
			f.mpKey = req.mpKey()
		}
		if e, err = s.addKey(who, string(req.key), f, st); err != nil {
			s.fail(w, err)
			return
		}
	}
	t, hit, err := s.token(r.Context(), st.cfg.RequestTimeout, e, r)
	if err != nil {
		s.metrics.cacheMisses.Inc()
		s.fail(w, s.mapError(err))
		return
	}
	w.hit = hit
	if hit {
		s.metrics.cacheHits.Inc()
	} else {
		s.metrics.cacheMisses.Inc()
	}
	if err := s.auditToken(w, r, st); err != nil {
		s.fail(w, err)
		return
	}
	s.metrics.requestsOK.Inc()
	scope := t.Scope
	if scope == "" {
		scope = strings.Join(req.req.Scopes, " ")
	}
	left := int64(t.Expiry.Sub(s.now()) / time.Second)
	out := appendTokenJSON((*bp)[:0], t.AccessToken, max(left, 1), scope)
	*bp = out[:0]
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	h["Pragma"] = hdrNoCache
	_, _ = w.Write(out)
}

// readBody reads the request body into buf, at most maxBody bytes.
func readBody(w http.ResponseWriter, r *http.Request, buf []byte) ([]byte, error) {
	if r.ContentLength > maxBody {
		return buf, &oauthError{status: http.StatusRequestEntityTooLarge, code: errInvalidRequest,
			description: "the request body is larger than 64 KiB"}
	}
	rd := http.MaxBytesReader(w, r.Body, maxBody)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return buf, &oauthError{status: http.StatusRequestEntityTooLarge, code: errInvalidRequest,
					description: "the request body is larger than 64 KiB"}
			}
			return buf, badRequest(errInvalidRequest, "the request body could not be read")
		}
	}
}
