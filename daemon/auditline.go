package daemon

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
)

// Outcomes of a token request, in the audit trail and the metrics.
const (
	outcomeIssued  = "issued"  // answered with a token this request waited for
	outcomeCached  = "cached"  // answered from the cache
	outcomeRefused = "refused" // 4xx
	outcomeFailed  = "failed"  // 5xx
)

// answer is the http.ResponseWriter of a token request: it notes how the
// request was answered, for the metrics and the audit trail.
type answer struct {
	http.ResponseWriter
	status  int
	oe      *oauthError
	reason  string // why it was refused, if not oe.code
	client  *client
	form    url.Values
	req     *tokenRequest
	hit     bool
	audited bool // its audit line was written, or tried (a token's)
}

var answerPool = sync.Pool{New: func() any { return new(answer) }}

// WriteHeader notes the status.
func (a *answer) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
	a.ResponseWriter.WriteHeader(code)
}

// Write notes a status of 200 when none was written.
func (a *answer) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	return a.ResponseWriter.Write(b)
}

// noteError notes the error answered, and a refusal's reason.
func (a *answer) noteError(err error, oe *oauthError) {
	a.oe = oe
	var ae *admissionError
	if errors.As(err, &ae) {
		a.reason = ae.reason
		if ae.client != nil {
			a.client = ae.client
		}
	}
}

// outcome returns the outcome of the answer, and the reason of a refusal.
func (a *answer) outcome() (string, string) {
	switch {
	case a.status == 0 || a.status == http.StatusOK:
		if a.hit {
			return outcomeCached, ""
		}
		return outcomeIssued, ""
	case a.status < 500:
		reason := a.reason
		if reason == "" && a.oe != nil {
			reason = a.oe.code
		}
		return outcomeRefused, reason
	}
	return outcomeFailed, ""
}

// serveTokenAnswered answers a token request, counts it for its client
// and writes its audit line: a token's line before the token is sent (see
// auditToken), any other answer's after it. Refusals of callers that no
// client admits are summarized (see refusalLog).
func (s *Server) serveTokenAnswered(w http.ResponseWriter, r *http.Request) {
	st := s.settings()
	a := answerPool.Get().(*answer)
	*a = answer{ResponseWriter: w}
	s.serveToken(a, r, st)
	outcome, reason := a.outcome()
	var cm *clientMetrics
	if a.client != nil {
		cm = a.client.m
	}
	s.metrics.count(cm, outcome, reason)
	if al := st.cfg.Audit; al != nil && !a.audited {
		refusals, write := 0, true
		if unadmitted(a.reason) {
			refusals, write = s.refusals.note(callerOf(r))
		}
		if write {
			_ = s.writeAudit(al, a, r, outcome, refusals, st)
		}
	}
	*a = answer{}
	answerPool.Put(a)
}

// errAuditUnwritable is the answer to a request whose token's audit line
// could not be written.
var errAuditUnwritable = &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable, retryAfter: 30,
	description: "the daemon cannot write its audit log and serves no token without its audit line; ask its operator (the daemon's log says why)"}

// auditToken writes the audit line of the token a is about to send. If
// the line cannot be written, it returns the error to answer instead,
// unless Config.AuditServeOnFailure: no token without its audit line.
func (s *Server) auditToken(a *answer, r *http.Request, st *settings) error {
	al := st.cfg.Audit
	if al == nil {
		return nil
	}
	a.audited = true
	outcome, _ := a.outcome()
	if err := s.writeAudit(al, a, r, outcome, 0, st); err != nil && !st.cfg.AuditServeOnFailure {
		return errAuditUnwritable
	}
	return nil
}

// writeAudit writes a's audit line to al. A failure is counted
// (mphsm_audit_write_failures_total) and logged at most once a minute
// with the count since the last line; the first line that works again
// after failures is logged too.
func (s *Server) writeAudit(al *AuditLog, a *answer, r *http.Request, outcome string, refusals int, st *settings) error {
	err := al.write(func(b []byte) []byte { return a.appendAudit(b, r, outcome, refusals) })
	if err == nil {
		if n, ok := al.noteWritten(); ok {
			s.log().Warn("the audit log is written again", "path", al.path, "failures_not_logged_before", n)
		}
		return nil
	}
	s.metrics.auditFailures.Inc()
	if n, ok := al.noteFailure(time.Now()); ok {
		then := "tokens are refused (503) until it can be written"
		if st.cfg.AuditServeOnFailure {
			then = "tokens are served without their audit lines (AuditServeOnFailure, --audit-failure serve)"
		}
		s.log().Error("cannot write the audit log: "+then, "path", al.path, "failures", n, "error", err)
	}
	return err
}

// appendAudit appends the audit line of a: never the access token, the
// client secret or the pid in clear; a caller's values bounded by
// excerpt, lists to maxCallerValues values. refusals, if not 0, is the
// number of refusals of this caller the line stands for (see refusalLog).
func (a *answer) appendAudit(b []byte, r *http.Request, outcome string, refusals int) []byte {
	b = append(b, `{"time":"`...)
	b = time.Now().UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","peer":{`...)
	if onUnixSocket(r) {
		if p := peerOfRequest(r); p != nil {
			b = append(b, `"uid":`...)
			b = strconv.AppendUint(b, uint64(p.uid), 10)
			b = append(b, `,"gid":`...)
			b = strconv.AppendUint(b, uint64(p.gid), 10)
			b = append(b, `,"pid":`...)
			b = strconv.AppendInt(b, int64(p.pid), 10)
			if len(p.groups) > 0 {
				b = append(b, `,"groups":[`...)
				for i, g := range p.groups {
					if i > 0 {
						b = append(b, ',')
					}
					b = strconv.AppendUint(b, uint64(g), 10)
				}
				b = append(b, ']')
			}
		} else {
			b = append(b, `"unix":"unknown"`...)
		}
	} else {
		b = append(b, `"address":`...)
		b = appendJSONString(b, r.RemoteAddr)
	}
	b = append(b, '}')
	if p := peerOfRequest(r); p != nil {
		b = appendField(b, "exe_at_accept", p.exeAtAccept) // a hint, not who asked: see peer
	}
	if c := a.client; c != nil {
		b = appendField(b, "client", c.Name)
		b = appendField(b, "client_id", c.ClientID)
	}
	if a.req != nil {
		q := &a.req.req
		b = append(b, `,"scope":"`...)
		for i, sc := range q.Scopes[:min(len(q.Scopes), maxCallerValues)] {
			if i > 0 {
				b = append(b, ' ')
			}
			b = append(b, excerpt(sc)...) // checked: printable ASCII without quotes or backslashes
		}
		if len(q.Scopes) > maxCallerValues {
			b = append(b, " ..."...)
		}
		b = append(b, '"')
		b = appendList(b, "resource", q.Resources)
		b = appendField(b, "consumer_org", excerpt(q.ConsumerOrg))
		b = appendField(b, "system_user_org", excerpt(q.SystemUserOrg))
		if q.PID != "" {
			b = appendField(b, "pid", grant.MaskPID(excerpt(q.PID)))
		}
		b = appendDetails(b, a.req.details)
		if a.req.altinn {
			b = append(b, `,"altinn":true`...)
		}
	} else if f := a.form; f != nil {
		b = appendField(b, "scope", excerpt(f.Get("scope")))
		b = appendList(b, "resource", f["resource"])
		b = appendField(b, "consumer_org", excerpt(f.Get("consumer_org")))
		b = appendField(b, "system_user_org", excerpt(f.Get("system_user_org")))
		if pid := f.Get("pid"); pid != "" {
			b = appendField(b, "pid", grant.MaskPID(excerpt(pid)))
		}
	}
	b = append(b, `,"outcome":"`...)
	b = append(b, outcome...)
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(max(a.status, http.StatusOK)), 10)
	if a.oe != nil {
		b = appendField(b, "error", a.oe.code)
		b = appendField(b, "error_description", a.oe.description)
	}
	if refusals > 0 {
		b = append(b, `,"refusals":`...)
		b = strconv.AppendInt(b, int64(refusals), 10)
	}
	return append(b, "}\n"...)
}

// appendDetails appends the types of the request's authorization_details
// and, for consents, their ids and froms, a person's number masked
// (grant.MaskParty).
func appendDetails(b []byte, details []grant.AuthorizationDetail) []byte {
	if len(details) == 0 {
		return b
	}
	var types, ids, froms []string
	for _, d := range details {
		types = append(types, d.Type)
		if d.Type == grant.ConsentType {
			ids = append(ids, d.Consent.ID)
			froms = append(froms, grant.MaskParty(d.Consent.From))
		}
	}
	b = appendList(b, "authorization_types", types)
	b = appendList(b, "consent_id", ids)
	return appendList(b, "consent_from", froms)
}

// maxAuditField bounds every string field of an audit line, whatever its
// source (an error description, a path), besides the tighter bound on a
// caller's values (excerpt).
const maxAuditField = 512

// appendField appends ,"name":"value" unless value is empty, value
// shortened to maxAuditField bytes.
func appendField(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, name...)
	b = append(b, `":`...)
	return appendJSONString(b, shorten(value, maxAuditField))
}

// appendList appends ,"name":[values] unless there are none; at most
// maxCallerValues values, each bounded by excerpt.
func appendList(b []byte, name string, values []string) []byte {
	if len(values) == 0 {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, name...)
	b = append(b, `":[`...)
	for i, v := range values[:min(len(values), maxCallerValues)] {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, excerpt(v))
	}
	return append(b, ']')
}

// unadmitted reports whether reason refuses a caller that no client
// admits (rather than an admitted caller's request).
func unadmitted(reason string) bool {
	switch reason {
	case reasonUnknownClient, reasonNotAdmitted, reasonNoClient, reasonCredentials:
		return true
	}
	return false
}

// refusalLog summarizes, for the audit log, the refusals of callers that
// no client admits (unknown_client, not_admitted, no_client,
// bad_credentials): at most one line per caller per
// refusalEvery, carrying the number of refusals of that caller it stands
// for, so that a caller refused in a loop cannot fill the disk.
// mphsm_client_refusals_total counts each of them.
type refusalLog struct {
	now func() time.Time // the clock; tests replace it

	mu      sync.Mutex
	callers map[callerID]*refusalRecord
}

type refusalRecord struct {
	logged  time.Time // its last line
	pending int       // refusals since, not written
}

// How refusals of callers no client admits are summarized.
const (
	refusalEvery      = time.Minute // at most one line per caller
	refusalMaxCallers = 4096        // callers tracked; beyond, one record for the rest
)

func newRefusalLog() *refusalLog {
	return &refusalLog{now: time.Now, callers: map[callerID]*refusalRecord{}}
}

// note counts a refusal of who and reports whether to write its line now,
// with the refusals it stands for (itself and those not written since
// who's last line).
func (l *refusalLog) note(who callerID) (refusals int, write bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	rec := l.callers[who]
	if rec == nil {
		if len(l.callers) >= refusalMaxCallers {
			for id, r := range l.callers {
				if r.pending == 0 && now.Sub(r.logged) >= refusalEvery {
					delete(l.callers, id)
				}
			}
		}
		if len(l.callers) >= refusalMaxCallers {
			who = callerID{} // the callers beyond the bound share one record
		}
		if rec = l.callers[who]; rec == nil {
			rec = &refusalRecord{}
			l.callers[who] = rec
		}
	}
	rec.pending++
	if !rec.logged.IsZero() && now.Sub(rec.logged) < refusalEvery {
		return 0, false
	}
	refusals, rec.pending, rec.logged = rec.pending, 0, now
	return refusals, true
}
