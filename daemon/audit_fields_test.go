package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/daemon/socket"

	"github.com/mp-hsm/mp-hsm/internal/testexec"
)

// TestAuditFieldsBounded: whatever a caller sends, its values reach the
// audit line and the error description at most maxCallerValue bytes each
// (lists at most maxCallerValues values), so one request writes a line of
// a few KiB at most. On 20aa3dc grant_type, scope and altinn were copied
// whole: a 60 KB line per request.
func TestAuditFieldsBounded(t *testing.T) {
	t.Parallel()
	var audit syncBuffer
	f := newDefFixture(t, func(c *Config) { c.Audit = NewAuditLog(&audit) })
	big := strings.Repeat("x", 60000)
	var many []string
	for i := range 5000 {
		many = append(many, fmt.Sprintf("test:%d", i))
	}
	form := func(kv ...string) map[string][]string {
		v := tokenForm("test:read")
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	resources := tokenForm("test:read")
	for i := range 100 {
		resources.Add("resource", fmt.Sprintf("https://api.example/%d/%s", i, big[:1000]))
	}
	for name, v := range map[string]map[string][]string{
		"grant_type":       form("grant_type", big),
		"bad scope":        form("scope", "test:"+big+`"`),
		"scope not parsed": form("scope", big+"\x01", "grant_type", ""),
		"many scopes":      form("scope", strings.Join(many, " ")),
		"altinn":           form("altinn", big),
		"consumer_org":     form("consumer_org", big),
		"system_user_org":  form("system_user_org", big),
		"pid":              form("pid", "1"+big),
		"resources":        resources,
	} {
		before := len(audit.String())
		a := f.ask(unixPeer(1001), v)
		if a.Status == http.StatusOK {
			t.Fatalf("%s: a token", name)
		}
		if len(a.Description) > 600 {
			t.Errorf("%s: an error description of %d bytes", name, len(a.Description))
		}
		line := audit.String()[before:]
		if len(line) > 4096 || strings.Count(line, "\n") != 1 {
			t.Errorf("%s: an audit line of %d bytes: %.300s...", name, len(line), line)
		}
		auditLines(t, line)
	}
}

// TestUnadmittedRefusalsSummarized: a caller that no client admits,
// asking in a loop, gets an audit line at most once a minute, carrying
// the number of its refusals ("refusals"), while each is counted in
// mphsm_client_refusals_total; other callers' lines are not held back.
// On 20aa3dc every refusal was a line (26 MB/s of audit log).
func TestUnadmittedRefusalsSummarized(t *testing.T) {
	t.Parallel()
	var audit syncBuffer
	f := newDefFixture(t, func(c *Config) {
		c.Audit = NewAuditLog(&audit)
		c.ClientSecret = ""
		c.Clients = []Client{{Name: "ledger", ClientID: defClient, Users: []string{"1001"}}}
	})
	var mu sync.Mutex
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	f.srv.refusals.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	const n = 500
	for range n {
		wantErrorAnswer(t, f.ask(unixPeer(65534), tokenForm("test:read")), http.StatusUnauthorized, errInvalidClient)
	}
	wantTokenAnswer(t, f.ask(unixPeer(1001), tokenForm("test:read")))
	wantErrorAnswer(t, f.ask(unixPeer(65533), tokenForm("test:read")), http.StatusUnauthorized, errInvalidClient)
	advance(61 * time.Second)
	wantErrorAnswer(t, f.ask(unixPeer(65534), tokenForm("test:read")), http.StatusUnauthorized, errInvalidClient)

	lines := auditLines(t, audit.String())
	type want struct {
		uid      float64
		refusals any
	}
	wants := []want{{65534, float64(1)}, {1001, nil}, {65533, float64(1)}, {65534, float64(n)}}
	if len(lines) != len(wants) {
		t.Fatalf("%d audit lines, want %d:\n%s", len(lines), len(wants), shorten(audit.String(), 2000))
	}
	for i, w := range wants {
		if uid := lines[i]["peer"].(map[string]any)["uid"]; uid != w.uid || lines[i]["refusals"] != w.refusals {
			t.Errorf("line %d: uid %v refusals %v, want %v %v", i+1, uid, lines[i]["refusals"], w.uid, w.refusals)
		}
	}
	if got := refusalCount(t, f.srv, noClient, reasonNoClient); got != n+2 {
		t.Errorf("mphsm_client_refusals_total{no_client} %v, want %d", got, n+2)
	}
}

// refusalCount reads mphsm_client_refusals_total{client, reason}.
func refusalCount(t *testing.T, s *Server, client, reason string) float64 {
	t.Helper()
	mfs, err := s.settings().cfg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mphsm_client_refusals_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["client"] == client && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// helperExecEnv makes the test binary the child of TestAuditExeAtAccept.
const helperExecEnv = "MPHSM_TEST_CONNECT_THEN_EXEC"

// TestHelperConnectThenExec is not a test: as the child of
// TestAuditExeAtAccept it connects to the socket, sends a token request,
// and then runs another program (sleep) in the same process, the
// connection kept open.
func TestHelperConnectThenExec(t *testing.T) {
	sock := os.Getenv(helperExecEnv)
	if sock == "" {
		t.Skip("the child process of TestAuditExeAtAccept")
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	body := tokenForm("test:read").Encode()
	if _, err := fmt.Fprintf(c, "POST /token HTTP/1.1\r\nHost: mp-hsm\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
		t.Fatal(err)
	}
	raw, err := c.(*net.UnixConn).File()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.Dup(int(raw.Fd())); err != nil { // without close-on-exec: kept open in sleep
		t.Fatal(err)
	}
	t.Fatal(syscall.Exec("/bin/sleep", []string{"sleep", "60"}, nil))
}

// TestAuditExeAtAccept: a caller that connects and then runs another
// program before the daemon accepts is recorded by what the kernel
// recorded at connect (uid, gid, pid), and the program /proc shows at
// accept is written as exe_at_accept, outside peer: it is not who asked.
// On 20aa3dc it was peer.exe, as if identity (23 of 30 probes named the
// wrong program).
func TestAuditExeAtAccept(t *testing.T) {
	t.Parallel()
	sleep, err := filepath.EvalSymlinks("/bin/sleep")
	if err != nil {
		t.Skipf("no /bin/sleep: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var audit syncBuffer
	f := newDefFixture(t, func(c *Config) { c.Audit = NewAuditLog(&audit) })
	dir, err := os.MkdirTemp("", "mphsm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "d.sock")
	ln, err := socket.Listen("unix:"+sock, socket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := testexec.Command(t, time.Minute, self, "-test.run=^TestHelperConnectThenExec$")
	cmd.Env = []string{helperExecEnv + "=" + sock}
	child := testexec.Start(t, cmd)
	pid := child.Process.Pid
	// Accept only once the child runs sleep, after it connected.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for {
		if exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); exe == sleep {
			break
		}
		select {
		case <-ctx.Done():
			stdout, stderr := child.Output()
			t.Fatalf("the child did not run %s within 20 s:\n%s\n%s", sleep, stdout, stderr)
		case <-child.Done():
			stdout, stderr := child.Output()
			t.Fatalf("the child ended: %v\n%s\n%s", child.Err(), stdout, stderr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	go f.srv.Serve(ln)
	for audit.String() == "" {
		select {
		case <-ctx.Done():
			t.Fatal("no audit line within 20 s")
		case <-time.After(10 * time.Millisecond):
		}
	}
	lines := auditLines(t, audit.String())
	peer := lines[0]["peer"].(map[string]any)
	if peer["pid"] != float64(pid) || peer["uid"] != float64(os.Getuid()) {
		t.Fatalf("peer %v, want the child's pid %d and uid", peer, pid)
	}
	if _, ok := peer["exe"]; ok {
		t.Fatalf("peer %v names a program as if it were who asked; the request came from %s", peer, self)
	}
	if got := lines[0]["exe_at_accept"]; got != sleep {
		t.Fatalf("exe_at_accept %v, want %s, what the pid ran when the daemon accepted", got, sleep)
	}
}

// Refusals before a client is chosen (a GET, a body too large) are summarized
// like an unadmitted caller's: a caller who may connect cannot fill the disk.
func TestEarlyRefusalsSummarized(t *testing.T) {
	t.Parallel()
	var audit syncBuffer
	f := newDefFixture(t, func(c *Config) { c.Audit = NewAuditLog(&audit) })
	big := tokenForm(strings.Repeat("a", 70<<10))
	for range 100 {
		r := unixPeer(65534)(httptest.NewRequest(http.MethodGet, "/token", nil))
		w := httptest.NewRecorder()
		f.srv.ServeHTTP(w, r)
		if w.Code != http.StatusMethodNotAllowed {
			t.Fatalf("GET /token: %d, want 405", w.Code)
		}
		if a := f.ask(unixPeer(65534), big); a.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("a body over the limit: %s, want 413", a)
		}
	}
	if lines := auditLines(t, audit.String()); len(lines) != 1 || lines[0]["refusals"] != float64(1) {
		t.Fatalf("%d audit lines for 200 early refusals, want 1 with refusals 1:\n%s", len(lines), shorten(audit.String(), 2000))
	}
}
