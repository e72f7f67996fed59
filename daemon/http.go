package daemon

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mp-hsm/mp-hsm/grant"
)

// OAuth 2 error codes (RFC 6749 section 5.2, and temporarily_unavailable
// from section 4.1.2.1).
const (
	errInvalidRequest         = "invalid_request"
	errInvalidClient          = "invalid_client"
	errUnsupportedGrantType   = "unsupported_grant_type"
	errInvalidScope           = "invalid_scope"
	errServerError            = "server_error"
	errTemporarilyUnavailable = "temporarily_unavailable"
)

// oauthError is an OAuth 2 error answer.
type oauthError struct {
	status      int
	code        string
	description string
	retryAfter  int // seconds, for 503
}

func (e *oauthError) Error() string { return e.code + ": " + e.description }

func badRequest(code, description string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: code, description: description}
}

// ServeHTTP answers POST /token, GET /healthz, GET /readyz and GET
// /metrics. Callers on a unix socket need no credentials; others must
// authenticate for /token (see Config.ClientSecret).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/token":
		s.serveToken(w, r)
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

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	st := s.settings()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.fail(w, &oauthError{status: http.StatusMethodNotAllowed, code: errInvalidRequest,
			description: "the token endpoint takes POST only"})
		return
	}
	if !isForm(r.Header.Get("Content-Type")) {
		s.fail(w, badRequest(errInvalidRequest, "Content-Type must be application/x-www-form-urlencoded"))
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
	form, err := url.ParseQuery(string(body))
	if err != nil {
		s.fail(w, badRequest(errInvalidRequest, "the body is not a valid form: "+err.Error()))
		return
	}
	if !s.authorized(r, form, st) {
		w.Header().Set("WWW-Authenticate", `Basic realm="mp-hsm"`)
		s.fail(w, &oauthError{status: http.StatusUnauthorized, code: errInvalidClient,
			description: "client authentication failed: callers on TCP must send the daemon's client id and secret (HTTP Basic)"})
		return
	}
	req, err := parseRequest(form, st.policy, (*bp)[:0])
	if err != nil {
		s.fail(w, err)
		return
	}
	*bp = req.key[:0]
	// A key in the store was validated when it was added: only a new key
	// is validated in full.
	e := s.store.getBytes(req.key)
	if e == nil {
		if err := req.validate(); err != nil {
			s.fail(w, err)
			return
		}
		if e = s.entryFor(string(req.key), req.req, req.altinn, req.mpKey()); e == nil {
			s.fail(w, errStoreFull)
			return
		}
	}
	t, hit, err := s.token(r.Context(), st.cfg.RequestTimeout, e, servable)
	if err != nil {
		s.metrics.cacheMisses.Inc()
		s.fail(w, s.mapError(err))
		return
	}
	if hit {
		s.metrics.cacheHits.Inc()
	} else {
		s.metrics.cacheMisses.Inc()
	}
	s.metrics.requestsOK.Inc()
	scope := t.scope
	if scope == "" {
		scope = strings.Join(req.req.Scopes, " ")
	}
	left := int64(t.expiry.Sub(s.now()) / time.Second)
	out := appendTokenJSON((*bp)[:0], t.access, max(left, 1), scope)
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

// authorized reports whether the caller may ask for tokens: always on a
// unix socket; on TCP with the client id and secret, in an HTTP Basic
// header (form-encoded, as RFC 6749 section 2.3.1 says) or in the form.
func (s *Server) authorized(r *http.Request, form url.Values, st *settings) bool {
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && la.Network() == "unix" {
		return true
	}
	if st.cfg.ClientSecret == "" {
		return false
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		if v, err := url.QueryUnescape(id); err == nil {
			id = v
		}
		if v, err := url.QueryUnescape(secret); err == nil {
			secret = v
		}
	} else {
		if len(form["client_secret"]) != 1 || len(form["client_id"]) != 1 {
			return false
		}
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	ih := sha256.Sum256([]byte(id))
	sh := sha256.Sum256([]byte(secret))
	okID := subtle.ConstantTimeCompare(ih[:], st.idHash[:])
	okSecret := subtle.ConstantTimeCompare(sh[:], st.secretHash[:])
	return okID&okSecret == 1
}

// tokenRequest is a parsed request and its cache key.
type tokenRequest struct {
	req    grant.Request
	altinn bool
	key    []byte // "mp" or "altinn", then the fields, separated by NUL
}

// mpKey is the key of the request's Maskinporten token.
func (tr *tokenRequest) mpKey() string {
	_, rest, _ := strings.Cut(string(tr.key), "\x00")
	return "mp\x00" + rest
}

// isForm reports whether ct is application/x-www-form-urlencoded.
func isForm(ct string) bool {
	if ct == "application/x-www-form-urlencoded" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/x-www-form-urlencoded"
}

// parseRequest checks a client-credentials form, applies the scope policy,
// and builds the cache key into buf. Scopes and resources are
// deduplicated and sorted, so that the same set always makes the same key
// and the same grant. The claims are validated by validate, which is only
// needed for a key that is not yet in the store.
func parseRequest(form url.Values, policy *scopePolicy, buf []byte) (*tokenRequest, error) {
	for _, name := range []string{"grant_type", "scope", "consumer_org", "pid", "system_user_org", "altinn", "client_id", "client_secret"} {
		if len(form[name]) > 1 {
			return nil, badRequest(errInvalidRequest, "the parameter "+name+" is given more than once")
		}
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		return nil, badRequest(errInvalidRequest, "grant_type is missing; use client_credentials")
	default:
		return nil, badRequest(errUnsupportedGrantType, "grant_type "+strconv.Quote(gt)+" is not supported; use client_credentials")
	}
	raw := form.Get("scope")
	scopes := make([]string, 0, 4)
	for sc := range strings.SplitSeq(raw, " ") {
		if sc == "" {
			continue
		}
		if !grant.ValidScope(sc) {
			return nil, badRequest(errInvalidScope, "the scope "+strconv.Quote(sc)+" holds characters a scope cannot hold")
		}
		if !policy.allows(sc) {
			return nil, badRequest(errInvalidScope, "the scope "+strconv.Quote(sc)+" is not allowed by this daemon (--allowed-scopes)")
		}
		scopes = append(scopes, sc)
	}
	if len(scopes) == 0 {
		return nil, badRequest(errInvalidScope, "scope is missing: give the scopes to ask Maskinporten for, separated by spaces")
	}
	if len(scopes) > 1 {
		slices.Sort(scopes)
		scopes = slices.Compact(scopes)
	}
	resources := form["resource"]
	if len(resources) > 1 {
		resources = slices.Clone(resources)
		slices.Sort(resources)
		resources = slices.Compact(resources)
	}
	tr := &tokenRequest{req: grant.Request{
		Scopes:        scopes,
		Resources:     resources,
		ConsumerOrg:   form.Get("consumer_org"),
		PID:           form.Get("pid"),
		SystemUserOrg: form.Get("system_user_org"),
	}}
	switch v := form.Get("altinn"); v {
	case "", "false", "0":
		buf = append(buf, "mp"...)
	case "true", "1":
		tr.altinn = true
		buf = append(buf, "altinn"...)
	default:
		return nil, badRequest(errInvalidRequest, "altinn must be true or false, not "+strconv.Quote(v))
	}
	for _, list := range [][]string{scopes, resources} {
		buf = append(buf, 0)
		for i, v := range list {
			if i > 0 {
				buf = append(buf, ' ')
			}
			buf = append(buf, v...)
		}
	}
	for _, v := range []string{tr.req.ConsumerOrg, tr.req.PID, tr.req.SystemUserOrg} {
		buf = append(buf, 0)
		buf = append(buf, v...)
	}
	tr.key = buf
	return tr, nil
}

// validate checks the claims as grant.Request.Validate does, as OAuth 2
// errors.
func (tr *tokenRequest) validate() error {
	for _, res := range tr.req.Resources {
		if strings.ContainsRune(res, 0) {
			return badRequest(errInvalidRequest, "invalid resource")
		}
	}
	err := tr.req.Validate()
	if err == nil {
		return nil
	}
	var ve *grant.ValidationError
	if errors.As(err, &ve) {
		code := errInvalidRequest
		if ve.Field == "scope" {
			code = errInvalidScope
		}
		field := ve.Field
		if field == "systemuser_org" {
			field = "system_user_org"
		}
		return badRequest(code, "invalid "+field+": "+ve.Reason)
	}
	return badRequest(errInvalidRequest, err.Error())
}

// mapError turns an error from getting a token into an OAuth 2 error: 503
// temporarily_unavailable when the card is away or Maskinporten fails, the
// caller's error when Maskinporten refused the scope, and server_error when
// the daemon's own configuration is at fault.
func (s *Server) mapError(err error) *oauthError {
	var oe *oauthError
	var nre *notReadyError
	var te *grant.TokenError
	switch {
	case errors.As(err, &oe):
		return oe
	case errors.As(err, &nre):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: "cannot get a token now: " + nre.reason, retryAfter: 5}
	case isDeviceFault(err):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: "the card or HSM failed while signing (" + err.Error() + "); reconnecting", retryAfter: 5}
	case isPINError(err):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: loginRefusedReason(err)}
	case errors.As(err, &te) && te.StatusCode < 500:
		desc := "Maskinporten refused: " + te.Error()
		switch {
		case te.Code == errInvalidScope:
			return &oauthError{status: http.StatusBadRequest, code: errInvalidScope, description: desc}
		case te.StatusCode == http.StatusForbidden:
			code := te.Code
			if code == "" {
				code = errInvalidScope
			}
			return &oauthError{status: http.StatusForbidden, code: code, description: desc}
		}
		return &oauthError{status: http.StatusBadGateway, code: errServerError,
			description: desc + " (the daemon's client id, key or environment is wrong)"}
	case errors.Is(err, grant.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: "Maskinporten is unavailable: " + err.Error(), retryAfter: 5}
	case errors.Is(err, errStoreFull):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: err.Error(), retryAfter: 5}
	case errors.Is(err, errShuttingDown):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: err.Error(), retryAfter: 1}
	case errors.Is(err, grant.ErrBadResponse):
		return &oauthError{status: http.StatusBadGateway, code: errServerError, description: err.Error()}
	case errors.Is(err, grant.ErrInvalidRequest):
		return badRequest(errInvalidRequest, err.Error())
	case errors.Is(err, grant.ErrInvalidConfig), errors.Is(err, ErrConfig):
		return &oauthError{status: http.StatusInternalServerError, code: errServerError,
			description: "the daemon's configuration is invalid: " + err.Error()}
	case errors.Is(err, context.Canceled):
		return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable,
			description: "the request was canceled", retryAfter: 1}
	}
	return &oauthError{status: http.StatusInternalServerError, code: errServerError, description: err.Error()}
}

// fail counts and writes an error answer.
func (s *Server) fail(w http.ResponseWriter, err error) {
	var oe *oauthError
	if !errors.As(err, &oe) {
		oe = s.mapError(err)
	}
	s.metrics.requests.WithLabelValues(oe.code).Inc()
	s.writeError(w, oe)
}

func (s *Server) writeError(w http.ResponseWriter, oe *oauthError) {
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	h["Pragma"] = hdrNoCache
	if oe.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(oe.retryAfter))
	}
	w.WriteHeader(oe.status)
	b := append([]byte(`{"error":`), '"')
	b = append(b, oe.code...)
	b = append(b, `","error_description":`...)
	b = appendJSONString(b, oe.description)
	b = append(b, "}\n"...)
	_, _ = w.Write(b)
}

// appendTokenJSON appends Maskinporten's token-response shape.
func appendTokenJSON(b []byte, access string, expiresIn int64, scope string) []byte {
	b = append(b, `{"access_token":`...)
	b = appendJSONString(b, access)
	b = append(b, `,"token_type":"Bearer","expires_in":`...)
	b = strconv.AppendInt(b, expiresIn, 10)
	b = append(b, `,"scope":`...)
	b = appendJSONString(b, scope)
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string. Characters that are not
// printable ASCII are escaped, so the answer is plain ASCII.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\t':
			b = append(b, '\\', 't')
		default:
			if c < 0x80 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
				break
			}
			// Non-ASCII: escape the whole UTF-8 sequence as UTF-16 units.
			r, size := utf8.DecodeRuneInString(s[i:])
			if r > 0xffff {
				r -= 0x10000
				hi, lo := 0xd800+(r>>10), 0xdc00+(r&0x3ff)
				b = append(b, '\\', 'u', hex[hi>>12&0xf], hex[hi>>8&0xf], hex[hi>>4&0xf], hex[hi&0xf])
				b = append(b, '\\', 'u', hex[lo>>12&0xf], hex[lo>>8&0xf], hex[lo>>4&0xf], hex[lo&0xf])
			} else {
				b = append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
			}
			i += size - 1
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
