package testexec

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fatalTB records Fatalf and Errorf instead of failing the real test;
// Fatalf ends the calling goroutine as the real one does.
type fatalTB struct {
	testing.TB
	mu   sync.Mutex
	msgs []string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	runtime.Goexit()
}

func (f *fatalTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}

func (f *fatalTB) messages() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.msgs, "\n")
}

// TestRunDeadline: a child that outlives its deadline is killed and the
// test fails at once, naming the command and what it printed.
func TestRunDeadline(t *testing.T) {
	ft := &fatalTB{TB: t}
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		c := Command(ft, 300*time.Millisecond, "/bin/sh", "-c", "echo started-here; exec sleep 60")
		Run(ft, c)
		ft.Errorf("Run returned after the deadline")
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not come back after the child's deadline")
	}
	msg := ft.messages()
	for _, want := range []string{"/bin/sh -c echo started-here; exec sleep 60", "still running after 300ms", "started-here"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the failure does not say %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "Run returned") {
		t.Error("Run returned instead of failing the test")
	}
	t.Logf("failed after %v", time.Since(start).Round(time.Millisecond))
}

// TestRunGrandchildHoldsPipe: a grandchild that keeps the output pipe open
// after the child exits does not hold Run past WaitDelay.
func TestRunGrandchildHoldsPipe(t *testing.T) {
	c := Command(t, 30*time.Second, "/bin/sh", "-c", "sleep 8 & echo parent-done")
	res := Run(t, c)
	if res.Code != 0 || !strings.Contains(res.Stdout, "parent-done") {
		t.Fatalf("got %s", res)
	}
}

// TestRunExitCode: a non-zero exit is a result, with the output.
func TestRunExitCode(t *testing.T) {
	res := Run(t, Command(t, 0, "/bin/sh", "-c", "echo out; echo err >&2; exit 3"))
	if res.Code != 3 || res.Stdout != "out\n" || res.Stderr != "err\n" {
		t.Fatalf("got %s", res)
	}
}

// TestStartStop: Stop ends a running child with SIGTERM.
func TestStartStop(t *testing.T) {
	c := Command(t, 30*time.Second, "/bin/sh", "-c", "trap 'echo term; exit 0' TERM; echo up; while :; do sleep 0.05; done")
	p := Start(t, c)
	deadline := time.Now().Add(10 * time.Second)
	for out, _ := p.Output(); !strings.Contains(out, "up"); out, _ = p.Output() {
		if time.Now().After(deadline) {
			t.Fatal("the child printed nothing")
		}
		time.Sleep(10 * time.Millisecond)
	}
	res := p.Stop()
	if res.Code != 0 || !strings.Contains(res.Stdout, "term") {
		t.Fatalf("after Stop: %s", res)
	}
}

// TestEnv: the child sees only what Env gives it.
func TestEnv(t *testing.T) {
	t.Setenv("MP_HSM_MODULE", "/should/not/leak")
	dir := t.TempDir()
	c := Command(t, 0, "/usr/bin/env")
	c.Env = Env(dir, "A=1", "A=2", "LANG")
	res := Run(t, c)
	for _, want := range []string{"HOME=" + dir + "\n", "A=2\n", "XDG_CONFIG_HOME=" + dir} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("env lacks %q:\n%s", want, res.Stdout)
		}
	}
	for _, no := range []string{"MP_HSM_MODULE", "A=1", "LANG="} {
		if strings.Contains(res.Stdout, no) {
			t.Errorf("env has %q:\n%s", no, res.Stdout)
		}
	}
}
