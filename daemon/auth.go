package daemon

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// authMethod is how a request presents client credentials (RFC 8414 names).
type authMethod string

const (
	authNone  authMethod = "none"
	authBasic authMethod = "client_secret_basic"
	authPost  authMethod = "client_secret_post"
)

// credentials are what a request presents; for HTTP Basic, id and secret each have
// two candidates: form-decoded (RFC 6749 2.3.1) and raw, as many libraries send them.
type credentials struct {
	method   authMethod
	ids      candidates
	secrets  candidates
	repeated bool // client_id or client_secret given more than once
}

type candidates struct { // the values one credential may stand for
	v [2]string
	n int
}

func (c *candidates) list() []string { return c.v[:c.n] }

// first is the first of vs, if any.
func first(vs []string) (c candidates) {
	if len(vs) > 0 {
		c.v[0], c.n = vs[0], 1
	}
	return c
}

// decodedAndRaw returns v form-decoded and as it came; once if the same or undecodable.
func decodedAndRaw(v string) candidates {
	if d, err := url.QueryUnescape(v); err == nil && d != v {
		return candidates{v: [2]string{d, v}, n: 2}
	}
	return candidates{v: [2]string{v}, n: 1}
}

// presentedCredentials returns the credentials of r and its form; two methods at
// once are refused, as RFC 6749 section 2.3 says a client must not use them.
func presentedCredentials(r *http.Request, form url.Values) (credentials, error) {
	id, secret, basic := r.BasicAuth()
	if !basic {
		ids, secrets := form["client_id"], form["client_secret"]
		c := credentials{method: authPost, ids: first(ids), secrets: first(secrets), repeated: len(ids) > 1 || len(secrets) > 1}
		if len(ids) == 0 && len(secrets) == 0 {
			c.method = authNone
		}
		return c, nil
	}
	c := credentials{method: authBasic, ids: decodedAndRaw(id), secrets: decodedAndRaw(secret)}
	if form.Has("client_secret") {
		return c, badRequest(errInvalidRequest,
			"the request authenticates twice, with HTTP Basic and client_secret in the body: use one method only (RFC 6749 section 2.3)")
	}
	for _, fid := range form["client_id"] {
		if fid != c.ids.v[0] && (c.ids.n < 2 || fid != c.ids.v[1]) {
			return c, badRequest(errInvalidRequest,
				"the client_id in the body differs from the HTTP Basic user: use one method only (RFC 6749 section 2.3)")
		}
	}
	return c, nil
}

type hashed struct { // the SHA-256 of candidates, computed once per request
	h [2][32]byte
	n int
}

func (c *candidates) hash() (h hashed) {
	for i, v := range c.list() {
		h.h[i] = sha256.Sum256([]byte(v))
	}
	h.n = c.n
	return h
}

// matches reports whether a hash equals want, comparing each in constant time.
func (h *hashed) matches(want *[32]byte) bool {
	ok := 0
	for i := range h.n {
		ok |= subtle.ConstantTimeCompare(h.h[i][:], want[:])
	}
	return ok == 1
}

// Reasons a caller is refused before its request is looked at (metrics, audit log).
const (
	reasonUnknownClient = "unknown_client"   // no client of that name
	reasonNotAdmitted   = "not_admitted"     // the client's users and groups do not admit the peer
	reasonNoClient      = "no_client"        // the peer is admitted to no client
	reasonAmbiguous     = "ambiguous_client" // admitted to several, naming none
	reasonCredentials   = "bad_credentials"  // TCP without a client's name and secret
)

// newLoginHint ends a refusal of a unix socket peer, judged by its process's groups.
const newLoginHint = " (a group added with usermod counts only for processes started after the user's next login: `id` shows the groups a shell has)"

// authenticate returns the client c's caller may use. On a unix socket: the
// one it names (client_id or Basic user), or else the only one its peer is
// admitted to. On TCP: the one whose name and secret it sends, compared with
// every client's in constant time; a failure is slowed (authFailed).
func (s *Server) authenticate(c *call) (*client, error) {
	st := c.st
	if !c.who.unix {
		var found *client
		if cr := &c.creds; cr.method != authNone && !cr.repeated && cr.ids.n > 0 && cr.secrets.n > 0 {
			ids, secrets := cr.ids.hash(), cr.secrets.hash()
			for _, cl := range st.clients { // every client, whether or not an earlier one matched
				if okID, okSecret := ids.matches(&cl.idHash), secrets.matches(&cl.secretHash); cl.Secret != "" && okID && okSecret {
					found = cl
				}
			}
		}
		if found != nil {
			return found, nil
		}
		s.authFailed(c)
		msg := "client authentication failed: callers on TCP must send a client's name and secret (HTTP Basic)"
		if c.creds.method != authNone {
			msg = "client authentication failed: the client id or secret is wrong"
		}
		return nil, refuse(reasonCredentials, http.StatusUnauthorized, errInvalidClient, msg)
	}
	if len(st.clients) == 1 && st.clients[0].anyUnix {
		return st.clients[0], nil // no Clients: every caller, whatever it names
	}
	p := c.peer
	who := "this unix socket peer (its uid is unknown)"
	if p != nil {
		who = "uid " + strconv.FormatUint(uint64(p.UID), 10) + " (gid " + strconv.FormatUint(uint64(p.GID), 10) + ")"
	}
	if ids := c.creds.ids.list(); len(ids) > 0 {
		for _, cl := range st.clients {
			if !slices.Contains(ids, cl.Name) {
				continue
			} else if !cl.admitsPeer(p) {
				return cl, refuse(reasonNotAdmitted, http.StatusUnauthorized, errInvalidClient,
					who+" is not admitted to the client '"+cl.Name+"': neither its users nor its groups name it; ask the daemon's operator"+newLoginHint)
			}
			return cl, nil
		}
		return nil, refuse(reasonUnknownClient, http.StatusUnauthorized, errInvalidClient,
			"this daemon has no client '"+excerpt(ids[0])+"'; send the name of one of its clients as client_id")
	}
	var found *client
	var names []string
	for _, cl := range st.clients {
		if cl.admitsPeer(p) {
			found = cl
			names = append(names, cl.Name)
		}
	}
	switch len(names) {
	case 0:
		return nil, refuse(reasonNoClient, http.StatusUnauthorized, errInvalidClient,
			who+" is admitted to no client of this daemon; ask its operator to add it to a client's users or groups"+newLoginHint)
	case 1:
		return found, nil
	}
	return nil, refuse(reasonAmbiguous, http.StatusBadRequest, errInvalidRequest,
		who+" is admitted to several clients ("+strings.Join(names, ", ")+"); name one as client_id (in the form or as the HTTP Basic user)")
}

// How failed client authentication on TCP is answered.
const (
	authFreeFailures = 5                      // failures per address answered at once
	authWindow       = time.Minute            // a quiet minute forgets an address's failures; one log line per address a minute
	authDelayFirst   = 100 * time.Millisecond // the first slowed answer's delay, doubling
	authDelayMax     = time.Second            // the most it grows to
	authWaitMax      = 10 * time.Second       // the most one answer waits, however many come at once
)

// tallies count events per caller for reports at most once a minute (failed TCP
// authentication, the audit log's refusal summaries). Of more than 4096 callers,
// those quiet for a minute with nothing pending are forgotten, or the rest share one.
type tallies struct {
	now func() time.Time // tests replace it

	mu sync.Mutex
	m  map[callerID]*tally
}

type tally struct {
	last     time.Time // the last event
	n        int       // events since the last quiet minute
	pending  int       // events not reported yet
	reported time.Time // the last report
	nextAt   time.Time // the earliest the next slowed answer goes out
}

func newTallies() tallies { return tallies{now: time.Now, m: map[callerID]*tally{}} }

// note counts an event of who, lets f see its record under the lock, and
// reports whether to report now, and the events the report stands for.
func (t *tallies) note(who callerID, f func(*tally, time.Time)) (events int, report bool) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.m[who]
	if r == nil && len(t.m) >= 4096 {
		maps.DeleteFunc(t.m, func(_ callerID, old *tally) bool { return old.pending == 0 && now.Sub(old.last) >= authWindow })
		if len(t.m) >= 4096 {
			who = callerID{} // the callers beyond the bound share one record
		}
		r = t.m[who]
	}
	if r == nil {
		r = &tally{}
		t.m[who] = r
	}
	r.count(now)
	if f != nil {
		f(r, now)
	}
	return r.report(now)
}

// count counts an event at now; a quiet minute before it starts n anew.
func (r *tally) count(now time.Time) {
	if now.Sub(r.last) >= authWindow {
		r.n = 0
	}
	r.n++
	r.pending++
	r.last = now
}

// report reports whether to report now (once a minute at most), and the events pending.
func (r *tally) report(now time.Time) (events int, report bool) {
	if !r.reported.IsZero() && now.Sub(r.reported) < authWindow {
		return 0, false
	}
	events, r.pending, r.reported = r.pending, 0, now
	return events, true
}

type authFailures struct { // failed authentications on TCP, per address
	tallies
	sleep func(ctx context.Context, d time.Duration) // tests replace it
}

// authFailed counts, logs and slows a failed authentication of c: after
// authFreeFailures failures without a quiet minute, each further one waits
// a delay doubling up to authDelayMax, spaced even when its attempts come
// in parallel. Other addresses and the right credentials are not slowed.
func (s *Server) authFailed(c *call) {
	s.metrics.authFailures.Inc()
	var wait time.Duration
	n, report := s.authFail.note(c.who, func(r *tally, now time.Time) {
		if r.n <= authFreeFailures {
			return
		}
		at := later(r.nextAt, now).Add(min(authDelayFirst<<min(r.n-authFreeFailures-1, 16), authDelayMax))
		if at.Sub(now) > authWaitMax {
			at = now.Add(authWaitMax)
		}
		r.nextAt, wait = at, at.Sub(now)
	})
	if report {
		how := "none"
		switch {
		case c.r.Header.Get("Authorization") != "":
			how = "authorization header"
		case c.form.Has("client_secret") || c.form.Has("client_id"):
			how = "form"
		}
		s.log().Warn("TCP client authentication failed", "address", c.who.String(), "failures", n, "credentials", how, "delay", wait)
	}
	if wait > 0 {
		s.authFail.sleep(c.r.Context(), wait)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}
