package daemon

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fullDisk mounts a 16 KiB tmpfs on a new directory and fills three of
// its four pages, so that about 4 KiB can still be written, and returns
// the directory and the filler file. It skips, saying so, where a tmpfs
// cannot be mounted (not root, or no CAP_SYS_ADMIN).
func fullDisk(t *testing.T) (dir, filler string) {
	t.Helper()
	dir = t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16k,mode=0700"); err != nil {
		t.Skipf("SKIPPED, the full disk is NOT tested: cannot mount a tmpfs (%v); run as root (CAP_SYS_ADMIN)", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	filler = filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 3*4096), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, filler
}

// auditLines parses a whole audit log: every line must be a JSON object.
func auditLines(t *testing.T, raw string) []map[string]any {
	t.Helper()
	if raw != "" && !strings.HasSuffix(raw, "\n") {
		t.Fatalf("the audit log ends in a torn line: ...%q", raw[max(len(raw)-80, 0):])
	}
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(raw, "\n"), "\n") {
		if l == "" {
			continue
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("audit line %q is not whole JSON: %v", l, err)
		}
		out = append(out, v)
	}
	return out
}

// TestAuditFullDisk: with the audit log on a disk that fills up, no token
// is sent without its audit line: once a line cannot be written whole,
// the request gets 503 temporarily_unavailable saying why, the failure is
// counted and logged (once, not per request), and the part of the line
// that was written is cut off again, so that every line in the file is
// whole JSON. When there is room again, tokens and their lines come back.
// On 20aa3dc 40 tokens were served with 20 lines, one log line, no
// metric, and a torn half line stopped jq.
func TestAuditFullDisk(t *testing.T) {
	t.Parallel()
	dir, filler := fullDisk(t)
	path := filepath.Join(dir, "audit.jsonl")
	al, err := OpenAuditLog(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	f := newDefFixture(t, func(c *Config) { c.Audit = al })
	served, refused := 0, 0
	for i := range 40 {
		a := f.ask(unixPeer(uint32(1000+i)), tokenForm("test:read"))
		switch a.Status {
		case http.StatusOK:
			if refused > 0 {
				t.Fatalf("request %d: a token after the disk was full", i)
			}
			served++
		default:
			wantErrorAnswer(t, a, http.StatusServiceUnavailable, errTemporarilyUnavailable)
			if !strings.Contains(a.Description, "cannot write its audit log") {
				t.Fatalf("description %q does not say why", a.Description)
			}
			refused++
		}
	}
	if served == 0 || refused == 0 {
		t.Fatalf("%d served, %d refused: the disk did not fill as planned", served, refused)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := auditLines(t, string(data))
	if len(lines) != served {
		t.Fatalf("%d tokens served, %d audit lines: want a line for each token and no other", served, len(lines))
	}
	for _, l := range lines {
		if l["status"] != float64(200) {
			t.Fatalf("audit line %v, want status 200", l)
		}
	}
	if n := counterValue(t, f.srv, "mphsm_audit_write_failures_total"); n != float64(refused) {
		t.Fatalf("mphsm_audit_write_failures_total %v, want %d", n, refused)
	}
	logs := f.logs.String()
	if n := strings.Count(logs, "cannot write the audit log"); n != 1 || !strings.Contains(logs, "tokens are refused (503)") ||
		!strings.Contains(logs, "no space left on device") {
		t.Fatalf("%d log lines about the audit log, want 1 saying tokens are refused and why:\n%s", n, logs)
	}

	// Room again: the next token is served with its line, after the
	// others, and the recovery is logged.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	wantTokenAnswer(t, f.ask(unixPeer(2000), tokenForm("test:read")))
	data, _ = os.ReadFile(path)
	lines = auditLines(t, string(data))
	if len(lines) != served+1 || lines[served]["peer"].(map[string]any)["uid"] != float64(2000) {
		t.Fatalf("%d lines after room was made, want %d, the last for uid 2000", len(lines), served+1)
	}
	if !strings.Contains(f.logs.String(), "the audit log is written again") {
		t.Fatalf("the recovery is not logged:\n%s", f.logs)
	}
}

// TestAuditFullDiskServe: with AuditServeOnFailure (--audit-failure
// serve) the operator chose tokens over the audit trail: every request
// gets its token, the failures are counted and logged, and the lines
// that were written are whole.
func TestAuditFullDiskServe(t *testing.T) {
	t.Parallel()
	dir, _ := fullDisk(t)
	path := filepath.Join(dir, "audit.jsonl")
	al, err := OpenAuditLog(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	f := newDefFixture(t, func(c *Config) { c.Audit, c.AuditServeOnFailure = al, true })
	for i := range 40 {
		wantTokenAnswer(t, f.ask(unixPeer(uint32(1000+i)), tokenForm("test:read")))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := auditLines(t, string(data))
	failed := counterValue(t, f.srv, "mphsm_audit_write_failures_total")
	if len(lines) == 40 || float64(len(lines))+failed != 40 {
		t.Fatalf("%d lines, %v failures counted: want the disk full and every failure counted", len(lines), failed)
	}
	if logs := f.logs.String(); strings.Count(logs, "cannot write the audit log: tokens are served without their audit lines") != 1 {
		t.Fatalf("want one log line saying tokens are served without audit lines:\n%s", logs)
	}
}
