// Package testexec runs the subprocesses of tests: each one with a deadline
// well under the package timeout, in an environment the test chose, and
// with its output kept so that a failure says where it hung.
//
// A test that waits on a child without a deadline turns a misconfigured
// machine into a nine-minute hang that names nothing. With this package a
// child still running at its deadline is killed (SIGKILL, then its pipes
// are closed after WaitDelay), and the test fails at once with the command,
// its arguments and everything it printed so far.
//
//	res := testexec.Run(t, testexec.Command(t, time.Minute, bin, "list"))
//	if res.Code != 0 { t.Fatal(res) }
//
// Long-running children (a daemon, an emulator) are started with Start,
// which stops them in t.Cleanup: SIGTERM, then SIGKILL after a grace period.
package testexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultTimeout is the deadline of a short command: far under go test's
// package timeout, far over what any of our commands needs.
const DefaultTimeout = 90 * time.Second

// waitDelay is how long Wait waits for the child's pipes to close after
// the child was killed or exited (a grandchild may hold them).
const waitDelay = 5 * time.Second

// Cmd is an exec.Cmd with a deadline. Set Env, Dir, Stdin or ExtraFiles on
// it before Run or Start; Stdout and Stderr are captured unless set.
type Cmd struct {
	*exec.Cmd
	timeout time.Duration
	cancel  context.CancelFunc
	ctx     context.Context

	stdout, stderr Buffer
}

// Command returns name with args, to be killed after timeout (0 means
// DefaultTimeout). Its environment is empty until the caller sets Env:
// nothing of the test process leaks in by accident (see Env).
func Command(t testing.TB, timeout time.Duration, name string, args ...string) *Cmd {
	t.Helper()
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	c := &Cmd{Cmd: exec.CommandContext(ctx, name, args...), timeout: timeout, cancel: cancel, ctx: ctx}
	c.Env = []string{}
	c.WaitDelay = waitDelay
	// The child leads a process group of its own, and the deadline kills
	// the whole group: a grandchild cannot keep the test waiting.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	t.Cleanup(cancel)
	return c
}

// Line is the command line, for messages.
func (c *Cmd) Line() string { return strings.Join(c.Args, " ") }

// Result is what a finished command did.
type Result struct {
	Args           []string
	Stdout, Stderr string
	Code           int // exit code; -1 if killed by a signal
	Rusage         *syscall.Rusage
}

func (r Result) String() string {
	return fmt.Sprintf("%s\nexit %d\nstdout: %s\nstderr: %s", strings.Join(r.Args, " "), r.Code, r.Stdout, r.Stderr)
}

func (c *Cmd) wire() {
	if c.Stdout == nil {
		c.Stdout = &c.stdout
	}
	if c.Stderr == nil {
		c.Stderr = &c.stderr
	}
}

// Run runs c to its end. A non-zero exit is a Result, not a failure; a
// command that cannot start, or that is still running at its deadline,
// fails t at once with the command line and its output so far.
func Run(t testing.TB, c *Cmd) Result {
	t.Helper()
	c.wire()
	err := c.Run()
	return c.result(t, err)
}

func (c *Cmd) result(t testing.TB, err error) Result {
	t.Helper()
	res := Result{Args: c.Args, Stdout: c.stdout.String(), Stderr: c.stderr.String()}
	if c.ProcessState != nil {
		res.Code = c.ProcessState.ExitCode()
		res.Rusage, _ = c.ProcessState.SysUsage().(*syscall.Rusage)
	}
	if errors.Is(c.ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("testexec: %s was still running after %v: killed\noutput so far:\nstdout: %s\nstderr: %s",
			c.Line(), c.timeout, res.Stdout, res.Stderr)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) && !errors.Is(err, exec.ErrWaitDelay) {
		t.Fatalf("testexec: %s: %v\nstdout: %s\nstderr: %s", c.Line(), err, res.Stdout, res.Stderr)
	}
	return res
}

// Proc is a started command.
type Proc struct {
	*Cmd
	t    testing.TB
	done chan struct{}
	err  error
	once sync.Once
}

// Start starts c and returns at once. t.Cleanup stops it (SIGTERM, then
// SIGKILL after a few seconds) if it is still running. A child still
// running at its deadline is killed, and Wait or the cleanup fails t with
// its command line and output.
func Start(t testing.TB, c *Cmd) *Proc {
	t.Helper()
	c.wire()
	if err := c.Start(); err != nil {
		t.Fatalf("testexec: start %s: %v", c.Line(), err)
	}
	p := &Proc{Cmd: c, t: t, done: make(chan struct{})}
	go func() {
		p.err = c.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.Stop() })
	return p
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is what exec.Cmd.Wait returned; call it after Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Output is what the process printed so far on the captured streams.
func (p *Proc) Output() (stdout, stderr string) { return p.stdout.String(), p.stderr.String() }

// Wait waits for the process to exit (at the latest at its deadline) and
// returns what it did; see Run.
func (p *Proc) Wait() Result {
	p.t.Helper()
	<-p.done
	return p.result(p.t, p.err)
}

// Stop ends the process, if it still runs, with SIGTERM and, after grace
// (5 s), SIGKILL, and waits for it. It returns the process's result without
// failing on its exit status or on the kill.
func (p *Proc) Stop() Result {
	p.once.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.Process.Kill()
			<-p.done
		}
	})
	<-p.done
	res := Result{Args: p.Args, Stdout: p.stdout.String(), Stderr: p.stderr.String()}
	if p.ProcessState != nil {
		res.Code = p.ProcessState.ExitCode()
	}
	if errors.Is(p.ctx.Err(), context.DeadlineExceeded) {
		p.t.Errorf("testexec: %s was still running after %v: killed\noutput so far:\nstdout: %s\nstderr: %s",
			p.Line(), p.timeout, res.Stdout, res.Stderr)
	}
	return res
}

// Env returns a minimal environment for a child: PATH from the test
// process, HOME, TMPDIR and the XDG directories inside dir (so that no
// user's p11-kit, SoftHSM2 or other configuration is read by accident),
// LANG=C.UTF-8, then kv (KEY=value; later entries win, a KEY without "="
// removes it).
func Env(dir string, kv ...string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"TMPDIR=" + dir,
		"XDG_CONFIG_HOME=" + filepath.Join(dir, ".config"),
		"XDG_DATA_HOME=" + filepath.Join(dir, ".local", "share"),
		"XDG_CACHE_HOME=" + filepath.Join(dir, ".cache"),
		"XDG_RUNTIME_DIR=" + dir,
		"LANG=C.UTF-8",
	}
	return Setenv(env, kv...)
}

// Setenv returns a copy of env with each KEY=value of kv set (replacing an
// earlier value) and each KEY given without "=" removed.
func Setenv(env []string, kv ...string) []string {
	out := append([]string(nil), env...)
	for _, p := range kv {
		key, _, hasValue := strings.Cut(p, "=")
		keep := out[:0]
		for _, e := range out {
			if !strings.HasPrefix(e, key+"=") {
				keep = append(keep, e)
			}
		}
		out = keep
		if hasValue {
			out = append(out, p)
		}
	}
	return out
}

// Buffer is a bytes.Buffer safe for concurrent writes and reads: a child's
// output read while it still runs.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Tool returns the path of the program name, which the Debian package pkg
// installs (make deps installs it). When it is missing the test is skipped,
// unless the CI environment variable is set: then it fails, so that a CI
// run cannot pass by skipping.
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s is not installed (apt-get install %s, or make deps)", name, pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg + "; with CI set, this fails the test")
	return ""
}
