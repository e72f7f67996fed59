//go:build cgo

package backends

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// tpmProc is a daemon that StartTPM started: a child process leading a
// process group of its own, its output in a log file in the backend's
// directory.
type tpmProc struct {
	backend, name string // "tpm2-pkcs11", "swtpm"
	cmd           *exec.Cmd
	log           string
	done          chan struct{} // closed when the process has exited
	err           error         // what Wait returned, once done is closed
}

// tpmProcAttr puts cmd in a process group of its own, killed with it, and
// has the kernel kill it should this process die first.
func tpmProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if cmd.Cancel != nil { // made by exec.CommandContext: the deadline kills the group
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
	}
}

// tpmDaemon starts path with args as a daemon of r, which r.Stop ends.
func tpmDaemon(r *Running, dir, name string, env []string, path string, args ...string) (*tpmProc, error) {
	p := &tpmProc{backend: r.Name, name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", r.Name, name, err)
	}
	defer out.Close() // the child has its own descriptor
	p.cmd = exec.Command(path, args...)
	p.cmd.Env, p.cmd.Dir, p.cmd.Stdout, p.cmd.Stderr = env, dir, out, out
	tpmProcAttr(p.cmd)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: starting %s: %w", r.Name, name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	r.onStop(p.stop)
	return p, nil
}

// stop ends the daemon's process group: SIGTERM, then SIGKILL after a
// grace period. It returns an error only if the daemon outlived SIGKILL.
func (p *tpmProc) stop() error {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				return fmt.Errorf("%s: %s (pid %d) still running after SIGKILL", p.backend, p.name, pgid)
			}
		}
	}
	// Whatever the leader left in its group goes with it.
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%s: killing what %s left: %w", p.backend, p.name, err)
	}
	return nil
}

// exited returns an error saying that the daemon ended, with its log, if
// it has.
func (p *tpmProc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s: %s exited (%v) while starting: %s", p.backend, p.name, p.err, p.tail())
	default:
		return nil
	}
}

// tail is the end of the daemon's log.
func (p *tpmProc) tail() string {
	b, _ := os.ReadFile(p.log)
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

// waitSocket waits until the unix socket at each path accepts a
// connection, for at most tpmStepTimeout.
func (p *tpmProc) waitSocket(paths ...string) error {
	deadline := time.Now().Add(tpmStepTimeout)
	for _, path := range paths {
		for {
			if err := p.exited(); err != nil {
				return err
			}
			c, err := net.DialTimeout("unix", path, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: %s did not listen on %s within %v (%v): %s", p.backend, p.name, path, tpmStepTimeout, err, p.tail())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// retry runs argv until it succeeds, while the daemon p runs, for at most
// tpmStepTimeout: the first command a daemon serves tells that it is ready.
func (p *tpmProc) retry(env, argv []string) error {
	deadline := time.Now().Add(tpmStepTimeout)
	for {
		out, err := tpmRun(env, argv)
		if err == nil {
			return nil
		}
		if err2 := p.exited(); err2 != nil {
			return errors.Join(err2, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s failed until %s had run for %v: %w\n%s\n%s log: %s",
				p.backend, filepath.Base(argv[0]), p.name, tpmStepTimeout, err, out, p.name, p.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tpmRun runs argv with env and a deadline, and returns its output.
func tpmRun(env, argv []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), tpmStepTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	tpmProcAttr(cmd)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: killed after %v: %w", strings.Join(argv, " "), tpmStepTimeout, ctx.Err())
	}
	return string(out), err
}
