package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mp-hsm/mp-hsm/daemon/socket"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
)

// AuditLog is the daemon's audit trail (Config.Audit): one JSON line per answered
// token request: who asked, for which client, for what (personal numbers masked),
// how it ended; never a token, grant, PIN or secret, a caller's values bounded.
// Refusals of callers no client admits are summarized: a line per caller a minute.
//
// Each line is written whole in one write call; a write cut short (a full disk) is
// cut off the file again or, where it cannot be, the next line starts on a new
// line. The daemon must be the file's only writer. Safe for concurrent use.
type AuditLog struct {
	path string // "" for a writer given to NewAuditLog

	mu   sync.Mutex // held by each write, Reopen and Close
	w    io.Writer
	f    *os.File // the file opened, nil for standard output or a writer
	torn bool     // a short write left part of a line: the next starts with a newline

	fails tally // the writes that failed since one last worked
}

// OpenAuditLog opens path for appending (made with mode 0600, else keeping its mode;
// a symbolic link refused), or standard output when path is "-" (systemd journal).
func OpenAuditLog(path string) (*AuditLog, error) {
	if path == "-" {
		return &AuditLog{path: path, w: os.Stdout}, nil
	}
	f, err := safefile.OpenAppend(path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log %w", err)
	}
	return &AuditLog{path: path, w: f, f: f}, nil
}

// NewAuditLog returns an audit log that writes its lines to w.
func NewAuditLog(w io.Writer) *AuditLog { return &AuditLog{w: w} }

// Path returns the path the log was opened with: "-" for standard output, "" for a writer.
func (a *AuditLog) Path() string { return a.path }

// Reopen opens the log's path afresh and closes the old file, to follow a rotated
// log; if the path cannot be opened, the log writes on where it did and the error
// is returned. For standard output or a writer it does nothing.
func (a *AuditLog) Reopen() error {
	if a.path == "" || a.path == "-" {
		return nil
	}
	f, err := safefile.OpenAppend(a.path, 0o600)
	if err != nil {
		return fmt.Errorf("audit log %w", err)
	}
	a.mu.Lock()
	old := a.f
	a.f, a.w, a.torn = f, f, false
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

// write writes line whole, in one write call (see AuditLog).
func (a *AuditLog) write(line []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.torn {
		line = append([]byte{'\n'}, line...)
	}
	n, err := a.w.Write(line)
	if err == nil && n < len(line) {
		err = io.ErrShortWrite
	}
	switch {
	case err == nil:
		a.torn = false
	case n > 0:
		a.torn = a.f == nil || cutBack(a.f, int64(n)) != nil
	}
	return err
}

// cutBack cuts the last n bytes, a short write's part of a line, off f.
func cutBack(f *os.File, n int64) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	return f.Truncate(max(st.Size()-n, 0))
}

// auditLine is one line of the audit log; a caller's values bounded by excerpt,
// lists to maxCallerValues values, every string to maxAuditField bytes.
type auditLine struct {
	Time          string    `json:"time"`
	Peer          auditPeer `json:"peer"`
	ExeAtAccept   string    `json:"exe_at_accept,omitempty"` // a hint, not who asked: see socket.Peer
	Client        string    `json:"client,omitempty"`
	ClientID      string    `json:"client_id,omitempty"`
	Scope         string    `json:"scope,omitempty"`
	Resource      []string  `json:"resource,omitempty"`
	ConsumerOrg   string    `json:"consumer_org,omitempty"`
	SystemUserOrg string    `json:"system_user_org,omitempty"`
	PID           string    `json:"pid,omitempty"` // masked
	AuthzTypes    []string  `json:"authorization_types,omitempty"`
	ConsentID     []string  `json:"consent_id,omitempty"`
	ConsentFrom   []string  `json:"consent_from,omitempty"` // a person's number masked
	Altinn        bool      `json:"altinn,omitempty"`
	Outcome       string    `json:"outcome"`
	Status        int       `json:"status"`
	Error         string    `json:"error,omitempty"`
	Description   string    `json:"error_description,omitempty"`
	Refusals      int       `json:"refusals,omitempty"` // the refusals of this caller the line stands for
}

type auditPeer struct { // who asked: a unix socket peer, "unknown", or a TCP address
	*socket.Peer        // its JSON leaves ExeAtAccept to auditLine's own field
	Unix         string `json:"unix,omitempty"`
	Address      string `json:"address,omitempty"`
}

// maxAuditField bounds every string of an audit line, whatever its source.
const maxAuditField = 512

var auditBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }} // lines being encoded

// audit writes c's audit line, if there is an audit log; a failure to write is
// counted and logged at most once a minute, and the first line that works again.
func (s *Server) audit(c *call, status int, oe *oauthError) error {
	al := c.st.cfg.Audit
	if al == nil {
		return nil
	}
	l := auditLine{Time: time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"), Status: status, Outcome: outcomeOf(status, c.hit)}
	if oe != nil {
		l.Error, l.Description = oe.code, shorten(oe.description, maxAuditField)
		// A caller no client admits, or one refused before authentication (405, a
		// body too large or malformed, two ways of authenticating), gets at most
		// one line a minute: anyone who can connect could otherwise fill the disk.
		if oe.reason == "" && c.client == nil || slices.Contains([]string{reasonUnknownClient, reasonNotAdmitted, reasonNoClient, reasonCredentials}, oe.reason) {
			n, write := s.refusals.note(c.who, nil)
			if !write {
				return nil
			}
			l.Refusals = n
		}
	}
	switch p := c.peer; {
	case p != nil:
		l.Peer.Peer, l.ExeAtAccept = p, shorten(p.ExeAtAccept, maxAuditField)
	case c.who.unix:
		l.Peer.Unix = "unknown"
	default:
		l.Peer.Address = shorten(c.r.RemoteAddr, maxAuditField)
	}
	if cl := c.client; cl != nil {
		l.Client, l.ClientID = cl.Name, cl.ClientID
	}
	if q := &c.req; len(c.key) > 0 {
		if l.Scope = strings.Join(bounded(q.Scopes), " "); len(q.Scopes) > maxCallerValues {
			l.Scope += " ..."
		}
		l.Resource, l.ConsumerOrg, l.SystemUserOrg, l.PID, l.Altinn = bounded(q.Resources), excerpt(q.ConsumerOrg), excerpt(q.SystemUserOrg), q.PID, c.altinn
		for _, d := range c.detail {
			l.AuthzTypes = append(l.AuthzTypes, d.Type)
			if d.Type == grant.ConsentType {
				l.ConsentID, l.ConsentFrom = append(l.ConsentID, d.Consent.ID), append(l.ConsentFrom, grant.MaskParty(d.Consent.From))
			}
		}
		l.AuthzTypes, l.ConsentID, l.ConsentFrom = bounded(l.AuthzTypes), bounded(l.ConsentID), bounded(l.ConsentFrom)
	} else if f := c.form; f != nil {
		l.Scope, l.Resource, l.ConsumerOrg, l.SystemUserOrg, l.PID = excerpt(f.Get("scope")), bounded(f["resource"]), excerpt(f.Get("consumer_org")), excerpt(f.Get("system_user_org")), f.Get("pid")
	}
	if l.PID != "" {
		l.PID = grant.MaskPID(excerpt(l.PID))
	}
	b := auditBufs.Get().(*bytes.Buffer)
	b.Reset()
	_ = json.NewEncoder(b).Encode(&l) // strings, numbers and lists of them only; ends with a newline
	err := al.write(b.Bytes())
	auditBufs.Put(b)
	al.mu.Lock()
	defer al.mu.Unlock()
	if err == nil {
		if al.fails.n > 0 {
			s.log().Warn("the audit log is written again", "path", al.path, "failures_not_logged_before", al.fails.pending)
			al.fails = tally{}
		}
		return nil
	}
	s.metrics.auditFailures.Inc()
	al.fails.count(time.Now())
	if n, report := al.fails.report(time.Now()); report {
		then := "tokens are refused (503) until it can be written"
		if c.st.cfg.AuditServeOnFailure {
			then = "tokens are served without their audit lines (AuditServeOnFailure, --audit-failure serve)"
		}
		s.log().Error("cannot write the audit log: "+then, "path", al.path, "failures", n, "error", err)
	}
	return err
}

// bounded returns at most maxCallerValues of vs, each bounded by excerpt:
// vs itself if that is all of it.
func bounded(vs []string) []string {
	if len(vs) <= maxCallerValues && !slices.ContainsFunc(vs, func(v string) bool { return len(v) > maxCallerValue }) {
		return vs
	}
	out := make([]string, 0, min(len(vs), maxCallerValues))
	for _, v := range vs[:cap(out)] {
		out = append(out, excerpt(v))
	}
	return out
}
