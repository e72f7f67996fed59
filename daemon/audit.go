package daemon

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mp-hsm/mp-hsm/internal/safefile"
)

// AuditLog is the daemon's audit trail (Config.Audit): one JSON line per
// answered token request, saying who asked (the unix socket peer's uid,
// gid, pid and groups, or the TCP address), for which client, for what
// (scope, resource, consumer_org, system_user_org, the pid claim masked,
// the authorization_details types and a consent's id and from with a
// person's number masked), and how it ended: outcome issued, cached, refused (4xx) or failed (5xx),
// the HTTP status and the OAuth 2 error. It never holds a token, grant,
// PIN or secret, and a caller's values in it are bounded (see excerpt).
// Refusals of callers admitted to no client are summarized: at most one
// line per caller a minute, with their count.
//
// Every line is whole: it is written in one write call, and when a write
// is cut short (a full disk) the part written is cut off the file again;
// where that cannot be done (standard output, a writer, or the truncation
// failed), the next line starts on a new line. The daemon must be the
// file's only writer. A token whose line cannot be written is not served
// (see Config.AuditServeOnFailure).
//
// Safe for concurrent use.
type AuditLog struct {
	path string // "" for a writer given to NewAuditLog

	// mu is held by each write (a line is one write call), and by Reopen
	// and Close.
	mu   sync.Mutex
	w    io.Writer
	f    *os.File // the file opened, nil for standard output or a writer
	torn bool     // a short write left part of a line: the next starts with a newline

	// failing is set while writes fail; unreported counts the failures
	// since the last log line about them, at reportedAt (guarded by mu).
	failing    atomic.Bool
	unreported int
	reportedAt time.Time
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

// write writes the line that encode appends, whole or not at all, in one
// write call. When the write is cut short, the bytes written are cut off
// the file again; where that fails (or there is no file), the next line
// starts with a newline, so that it is whole. Every failure is returned.
func (a *AuditLog) write(encode func([]byte) []byte) error {
	bp := auditBufs.Get().(*[]byte)
	buf := encode(append((*bp)[:0], '\n')) // the newline is written only after a torn line
	a.mu.Lock()
	line := buf[1:]
	if a.torn {
		line = buf
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
	a.mu.Unlock()
	if cap(buf) <= 64<<10 {
		*bp = buf[:0]
		auditBufs.Put(bp)
	}
	return err
}

// cutBack cuts the last n bytes off f, the part of a line a short write
// left.
func cutBack(f *os.File, n int64) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	return f.Truncate(max(st.Size()-n, 0))
}

// auditReportEvery is the least time between two log lines about failed
// writes to the audit log.
const auditReportEvery = time.Minute

// noteFailure counts a failed write and reports whether to log it now,
// with the failures since the last line (at most one line a minute).
func (a *AuditLog) noteFailure(now time.Time) (failures int, report bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failing.Store(true)
	a.unreported++
	if !a.reportedAt.IsZero() && now.Sub(a.reportedAt) < auditReportEvery {
		return 0, false
	}
	failures, a.unreported, a.reportedAt = a.unreported, 0, now
	return failures, true
}

// noteWritten, after a write that worked, reports whether writes failed
// before it, with the failures not yet logged.
func (a *AuditLog) noteWritten() (unreported int, recovered bool) {
	if !a.failing.Load() {
		return 0, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.failing.Swap(false) {
		return 0, false
	}
	unreported, a.unreported, a.reportedAt = a.unreported, 0, time.Time{}
	return unreported, true
}
