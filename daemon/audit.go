package daemon

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
)

// AuditLog is the daemon's audit trail (Config.Audit): one JSON line per
// answered token request, saying who asked (the unix socket peer's uid,
// gid, pid and executable, or the TCP address), for which client, for
// what (scope, resource, consumer_org, system_user_org, the pid claim
// masked), and how it ended: outcome issued, cached, refused (4xx) or
// failed (5xx), the HTTP status and the OAuth 2 error. It never holds a
// token, grant, PIN or secret. Lines are written whole, one write each,
// so that a file opened with O_APPEND keeps them whole. Safe for
// concurrent use; a writer given to NewAuditLog must be safe for
// concurrent writes too.
type AuditLog struct {
	path string // "" for a writer given to NewAuditLog

	// mu is held for reading by writers (each line is one write call,
	// which the file keeps whole) and for writing by Reopen and Close.
	mu     sync.RWMutex
	w      io.Writer
	f      *os.File    // the file opened, nil for standard output or a writer
	failed atomic.Bool // the last write failed (logged once until one works)
}

// auditBufs holds the buffers lines are encoded in, outside any lock.
var auditBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// OpenAuditLog opens path for appending (created with mode 0600; an
// existing file keeps its mode; a symbolic link is refused), or standard
// output when path is "-" (for the systemd journal).
func OpenAuditLog(path string) (*AuditLog, error) {
	if path == "-" {
		return &AuditLog{path: path, w: os.Stdout}, nil
	}
	f, err := openAuditFile(path)
	if err != nil {
		return nil, err
	}
	return &AuditLog{path: path, w: f, f: f}, nil
}

// NewAuditLog returns an audit log that writes its lines to w.
func NewAuditLog(w io.Writer) *AuditLog { return &AuditLog{w: w} }

func openAuditFile(path string) (*os.File, error) {
	f, err := safefile.OpenAppend(path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log %w", err)
	}
	return f, nil
}

// Path returns the path the log was opened with: "-" for standard
// output, "" for a writer.
func (a *AuditLog) Path() string { return a.path }

// Reopen opens the log's path afresh and closes the file it wrote to, so
// that a rotated log (renamed by logrotate) is followed by a new file. If
// the path cannot be opened, the log keeps writing where it did and the
// error is returned. For standard output or a writer it does nothing.
func (a *AuditLog) Reopen() error {
	if a.path == "" || a.path == "-" {
		return nil
	}
	f, err := openAuditFile(a.path)
	if err != nil {
		return err
	}
	a.mu.Lock()
	old := a.f
	a.f, a.w = f, f
	a.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

// Close closes the file; later lines are dropped.
func (a *AuditLog) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.w = io.Discard
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}

// write writes one line; it reports an error only when the previous write
// worked, so that a failing log is logged once, not once per request.
func (a *AuditLog) write(encode func([]byte) []byte) error {
	bp := auditBufs.Get().(*[]byte)
	line := encode((*bp)[:0])
	a.mu.RLock()
	_, err := a.w.Write(line)
	a.mu.RUnlock()
	if cap(line) <= 64<<10 {
		*bp = line[:0]
		auditBufs.Put(bp)
	}
	if was := a.failed.Swap(err != nil); err != nil && !was {
		return err
	}
	return nil
}

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
	status int
	oe     *oauthError
	reason string // why it was refused, if not oe.code
	client *client
	form   url.Values
	req    *tokenRequest
	hit    bool
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

// serveTokenAnswered answers a token request and then counts it for its
// client and writes its audit line.
func (s *Server) serveTokenAnswered(w http.ResponseWriter, r *http.Request) {
	a := answerPool.Get().(*answer)
	*a = answer{ResponseWriter: w}
	s.serveToken(a, r)
	outcome, reason := a.outcome()
	var cm *clientMetrics
	if a.client != nil {
		cm = a.client.m
	}
	s.metrics.count(cm, outcome, reason)
	if al := s.settings().cfg.Audit; al != nil {
		if err := al.write(func(b []byte) []byte { return a.appendAudit(b, r, outcome) }); err != nil {
			s.log().Error("cannot write the audit log", "path", al.path, "error", err)
		}
	}
	*a = answer{}
	answerPool.Put(a)
}

// appendAudit appends the audit line of a: never the access token, the
// client secret or the pid in clear.
func (a *answer) appendAudit(b []byte, r *http.Request, outcome string) []byte {
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
			b = appendField(b, "exe", p.exe)
		} else {
			b = append(b, `"unix":"unknown"`...)
		}
	} else {
		b = append(b, `"address":`...)
		b = appendJSONString(b, r.RemoteAddr)
	}
	b = append(b, '}')
	if c := a.client; c != nil {
		b = appendField(b, "client", c.Name)
		b = appendField(b, "client_id", c.ClientID)
	}
	if a.req != nil {
		q := &a.req.req
		b = append(b, `,"scope":"`...)
		for i, sc := range q.Scopes {
			if i > 0 {
				b = append(b, ' ')
			}
			b = append(b, sc...) // checked: printable ASCII without quotes or backslashes
		}
		b = append(b, '"')
		b = appendList(b, "resource", q.Resources)
		b = appendField(b, "consumer_org", excerpt(q.ConsumerOrg))
		b = appendField(b, "system_user_org", excerpt(q.SystemUserOrg))
		if q.PID != "" {
			b = appendField(b, "pid", grant.MaskPID(excerpt(q.PID)))
		}
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
	return append(b, "}\n"...)
}

// appendField appends ,"name":"value" unless value is empty.
func appendField(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, name...)
	b = append(b, `":`...)
	return appendJSONString(b, value)
}

// appendList appends ,"name":[values] unless there are none; at most 20
// values, each shortened.
func appendList(b []byte, name string, values []string) []byte {
	if len(values) == 0 {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, name...)
	b = append(b, `":[`...)
	for i, v := range values[:min(len(values), 20)] {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, excerpt(v))
	}
	return append(b, ']')
}
