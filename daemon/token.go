package daemon

import (
	"cmp"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mp-hsm/mp-hsm/daemon/socket"
	"github.com/mp-hsm/mp-hsm/grant"
)

// call is one token request down the pipeline; its caller established once, by ServeHTTP.
type call struct {
	r      *http.Request
	st     *settings
	who    callerID     // who asks: established once
	peer   *socket.Peer // the unix socket peer; nil on TCP or if unknown
	form   url.Values
	creds  credentials
	client *client
	req    grant.Request // what it asks for, once authorized
	altinn bool
	detail []grant.AuthorizationDetail
	key    []byte // the cache key: "mp" or "altinn", then the fields, separated by NUL; once authorized
	buf    []byte // the body
	hit    bool
}

var callPool = sync.Pool{New: func() any { return &call{buf: make([]byte, 0, 2048), key: make([]byte, 0, 256)} }}

// serveToken answers POST /token for who.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, who callerID, peer *socket.Peer) {
	c := callPool.Get().(*call)
	*c = call{r: r, st: s.settings(), who: who, peer: peer, buf: c.buf[:0], key: c.key[:0], req: grant.Request{Scopes: c.req.Scopes[:0]}}
	tok, err := s.pipeline(w, c)
	s.answer(w, c, tok, err)
	if cap(c.buf) <= maxBody {
		*c = call{buf: c.buf, key: c.key, req: grant.Request{Scopes: c.req.Scopes[:0]}}
		callPool.Put(c)
	}
}

func (s *Server) pipeline(w http.ResponseWriter, c *call) (*cached, error) {
	r := c.r
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, &oauthError{status: http.StatusMethodNotAllowed, code: errInvalidRequest, description: "the token endpoint takes POST only"}
	}
	// Parse. The body is judged only after authentication, so that a
	// caller without credentials learns only invalid_client (RFC 6749 5.2).
	if err := c.readBody(w); err != nil {
		return nil, err
	}
	ct, formErr := r.Header.Get("Content-Type"), error(nil)
	isForm := ct == "application/x-www-form-urlencoded" // the common case, without ParseMediaType's allocations
	if !isForm {
		mt, _, _ := mime.ParseMediaType(ct)
		isForm = mt == "application/x-www-form-urlencoded"
	}
	if isForm {
		c.form, formErr = url.ParseQuery(string(c.buf))
	}
	var err error
	if c.creds, err = presentedCredentials(r, c.form); err != nil {
		return nil, err
	}

	// Authenticate.
	if c.client, err = s.authenticate(c); err != nil {
		return nil, err
	}

	// Authorize.
	switch {
	case !isForm:
		return nil, badRequest(errInvalidRequest, "Content-Type must be application/x-www-form-urlencoded")
	case formErr != nil:
		// Not formErr's text: it quotes the bad %-escape, which may be a
		// piece of the client_secret, and descriptions reach the audit log.
		return nil, badRequest(errInvalidRequest, "the body is not a valid form: a '%' not followed by two hex digits, or a ';' between parameters")
	}
	if err := c.authorize(); err != nil {
		return nil, err
	}

	// Get the token. A key in the cache was validated when it was added.
	e := s.cache.lookup(c.key)
	if e == nil {
		if err := c.validate(); err != nil {
			return nil, err
		}
		if e, err = s.addKey(c); err != nil {
			return nil, err
		}
	}
	tok, hit, err := s.tokenOf(e, c)
	if c.hit = hit; hit {
		s.metrics.cacheHits.Inc()
	} else {
		s.metrics.cacheMisses.Inc()
	}
	return tok, err
}

// readBody reads the body into c.buf, at most maxBody bytes.
func (c *call) readBody(w http.ResponseWriter) error {
	if c.r.ContentLength > maxBody {
		return errTooLarge
	}
	rd := http.MaxBytesReader(w, c.r.Body, maxBody)
	for {
		if len(c.buf) == cap(c.buf) {
			c.buf = slices.Grow(c.buf, 512)
		}
		n, err := rd.Read(c.buf[len(c.buf):cap(c.buf)])
		c.buf = c.buf[:len(c.buf)+n]
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
				return errTooLarge
			}
			return badRequest(errInvalidRequest, "the request body could not be read")
		}
	}
}

var errTooLarge = &oauthError{status: http.StatusRequestEntityTooLarge, code: errInvalidRequest, description: "the request body is larger than 64 KiB"}

// authorize checks the form against the client's policy and builds the cache key;
// scopes and resources sorted and deduplicated: one set, one key, one grant.
func (c *call) authorize() error {
	form, cl := c.form, c.client
	for name, vs := range form { // a form holds a few names: fewer lookups than asking for each
		if len(vs) > 1 && slices.Contains(singleParams, name) {
			return badRequest(errInvalidRequest, "the parameter "+name+" is given more than once")
		}
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		return badRequest(errInvalidRequest, "grant_type is missing; use client_credentials")
	default:
		return badRequest(errUnsupportedGrantType, "grant_type "+strconv.Quote(excerpt(gt))+" is not supported; use client_credentials")
	}
	q := &c.req
	for sc := range strings.SplitSeq(form.Get("scope"), " ") {
		switch {
		case sc == "":
			continue
		case !grant.ValidScope(sc):
			return badRequest(errInvalidScope, "the scope "+strconv.Quote(excerpt(sc))+" holds characters a scope cannot hold")
		case !cl.policy.allows(sc) && cl.anyUnix:
			return badRequest(errInvalidScope, "the scope "+strconv.Quote(excerpt(sc))+" is not allowed by this daemon (--allowed-scopes)")
		case !cl.policy.allows(sc):
			return badRequest(errInvalidScope, "the scope "+strconv.Quote(excerpt(sc))+" is not allowed for the client '"+cl.Name+"' (its scopes)")
		}
		q.Scopes = append(q.Scopes, sc)
	}
	if len(q.Scopes) == 0 {
		return badRequest(errInvalidScope, "scope is missing: give the scopes to ask Maskinporten for, separated by spaces")
	}
	slices.Sort(q.Scopes)
	q.Scopes = slices.Compact(q.Scopes)
	q.Resources = form["resource"]
	for _, res := range q.Resources {
		if !c.st.resources.allows(res) {
			return badRequest(errInvalidTarget, "the resource '"+excerpt(res)+"' is not allowed by this daemon (--allowed-resources)")
		}
	}
	slices.Sort(q.Resources)
	q.Resources = slices.Compact(q.Resources)
	q.ConsumerOrg, q.PID, q.SystemUserOrg = form.Get("consumer_org"), form.Get("pid"), form.Get("system_user_org")
	if raw := form.Get("authorization_details"); raw != "" {
		details, err := grant.ParseAuthorizationDetails([]byte(raw))
		if ve := (*grant.ValidationError)(nil); errors.As(err, &ve) {
			return badRequest(errInvalidAuthzDetails, "invalid authorization_details: "+ve.Reason)
		} else if err != nil {
			return badRequest(errInvalidAuthzDetails, "invalid authorization_details")
		}
		for _, d := range details {
			switch {
			case cl.authzTypes[d.Type]:
			case cl.anyUnix:
				return badRequest(errInvalidAuthzDetails, "authorization_details of type "+strconv.Quote(excerpt(d.Type))+" is not allowed: a daemon without [[client]] tables allows none")
			default:
				return badRequest(errInvalidAuthzDetails, "authorization_details of type "+strconv.Quote(excerpt(d.Type))+" is not allowed for the client '"+cl.Name+"' (its authorization-types)")
			}
		}
		q.AuthorizationDetails, c.detail = []byte(raw), details
	}
	kind := "mp"
	switch v := form.Get("altinn"); v {
	case "", "false", "0":
	case "true", "1":
		c.altinn, kind = true, "altinn"
	default:
		return badRequest(errInvalidRequest, "altinn must be true or false, not "+strconv.Quote(excerpt(v)))
	}
	k := append(append(append(c.key[:0], kind...), 0), cl.Name...)
	for _, list := range [][]string{q.Scopes, q.Resources} {
		k = append(k, 0)
		for i, v := range list {
			if i > 0 {
				k = append(k, ' ')
			}
			k = append(k, v...)
		}
	}
	for _, v := range []string{q.ConsumerOrg, q.PID, q.SystemUserOrg, string(q.AuthorizationDetails)} {
		k = append(append(k, 0), v...)
	}
	c.key = k
	return nil
}

// singleParams are the form's parameters given at most once.
var singleParams = []string{"grant_type", "scope", "consumer_org", "pid", "system_user_org", "authorization_details", "altinn", "client_id", "client_secret"}

// validate is grant.Request.Validate as OAuth 2 errors, for a new key.
func (c *call) validate() error {
	if slices.ContainsFunc(c.req.Resources, func(r string) bool { return strings.ContainsRune(r, 0) }) {
		return badRequest(errInvalidRequest, "invalid resource")
	}
	var ve *grant.ValidationError
	if err := c.req.Validate(); err == nil {
		return nil
	} else if !errors.As(err, &ve) {
		return badRequest(errInvalidRequest, err.Error())
	}
	code := map[string]string{"scope": errInvalidScope, "authorization_details": errInvalidAuthzDetails}[ve.Field]
	field := strings.Replace(ve.Field, "systemuser_org", "system_user_org", 1) // as the form names it
	return badRequest(cmp.Or(code, errInvalidRequest), "invalid "+field+": "+ve.Reason)
}

// answer writes the token or the error, and the audit line: a token's before the
// token is sent (unless AuditServeOnFailure, none without it).
func (s *Server) answer(w http.ResponseWriter, c *call, tok *cached, err error) {
	audited := err == nil // a token's line is written, or tried, once: before the token
	if audited && s.audit(c, http.StatusOK, nil) != nil && !c.st.cfg.AuditServeOnFailure {
		err = errAuditUnwritable
	}
	if err != nil {
		oe := s.mapError(err)
		s.metrics.count(c.client, outcomeOf(oe.status, false), oe)
		s.writeError(w, oe)
		if !audited {
			s.audit(c, oe.status, oe)
		}
		return
	}
	s.metrics.count(c.client, outcomeOf(http.StatusOK, c.hit), nil)
	h := w.Header()
	h["Content-Type"], h["Cache-Control"], h["Pragma"] = hdrJSON, hdrNoStore, hdrNoCache
	b := append(c.buf[:0], tok.head...)
	b = strconv.AppendInt(b, max(int64(time.Until(tok.token.Expiry)/time.Second), 1), 10)
	c.buf = append(b, tok.tail...)
	_, _ = w.Write(c.buf)
}

// Outcomes of a token request, in the audit log and the metrics.
const (
	outcomeIssued  = "issued"  // a token this request waited for
	outcomeCached  = "cached"  // a token from the cache
	outcomeRefused = "refused" // 4xx
	outcomeFailed  = "failed"  // 5xx
)

func outcomeOf(status int, hit bool) string {
	switch {
	case status >= 500:
		return outcomeFailed
	case status >= 400:
		return outcomeRefused
	case hit:
		return outcomeCached
	}
	return outcomeIssued
}

// Bounds on a caller's values repeated in errors and the audit log: bytes of one, values of a list.
const maxCallerValue, maxCallerValues = 100, 20

// excerpt bounds a caller's value wherever the daemon repeats it.
func excerpt(v string) string { return shorten(v, maxCallerValue) }

// shorten cuts v to at most n bytes at a UTF-8 boundary, adding "...".
func shorten(v string, n int) string {
	if len(v) <= n {
		return v
	}
	for n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	return v[:n] + "..."
}
