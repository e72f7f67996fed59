//go:build cgo

package backends

import (
	"bufio"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Card is the virtual smart card of StartCard: its key and what the fault
// tests do to it. Its methods are safe for concurrent use.
type Card struct {
	// Key is the card's key with its leaf certificate.
	Key CardKey
	// Intermediate is the issuing CA certificate, also on the card.
	Intermediate *x509.Certificate

	dir    string
	mu     sync.Mutex
	bridge *tpmProc
	in     io.WriteCloser
	lines  chan string // the bridge's answers, one a line
	pcscd  *tpmProc
}

// start starts the bridge in new mount and network namespaces, with dir/run
// mounted over /run/pcscd, then pcscd in the same namespaces.
func (c *Card) start(r *Running, bridge string) error {
	run := filepath.Join(c.dir, "run")
	if err := errors.Join(os.MkdirAll(run, 0o755), os.MkdirAll("/run/pcscd", 0o755), c.writeReaderConf()); err != nil {
		return err
	}
	p, in, lines, err := startBridge(r, c.dir, "unshare", "--mount", "--net", "--propagation", "private",
		"sh", "-c", `mount --bind "$0" /run/pcscd && exec "$@"`, run,
		bridge, strconv.Itoa(vpcdPort), "sql:"+filepath.Join(c.dir, "nssdb"), cardReader, "cert1", "cert2")
	if err != nil {
		return err
	}
	c.bridge, c.in, c.lines = p, in, lines
	select {
	case l := <-lines:
		if l != "ready" {
			return fmt.Errorf("the bridge said %q, want ready: %s", l, p.tail())
		}
	case <-time.After(tpmStepTimeout):
		return fmt.Errorf("the bridge was not ready within %v: %s", tpmStepTimeout, p.tail())
	}
	return c.startPCSCD(r)
}

// writeReaderConf writes dir/conf/vpcd, pcscd's reader configuration:
// vpcd listening on vpcdPort in the namespace.
func (c *Card) writeReaderConf() error {
	conf := filepath.Join(c.dir, "conf")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(conf, "vpcd"), fmt.Appendf(nil,
		"FRIENDLYNAME \"%s\"\nDEVICENAME /dev/null:%d\nLIBPATH %s\n", cardReader, vpcdPort, vpcdDriver), 0o644)
}

// startBridge starts argv as the bridge: its stdin a pipe for commands, its
// stdout read line by line into lines, its stderr in dir/cardbridge.log.
func startBridge(r *Running, dir string, argv ...string) (*tpmProc, io.WriteCloser, chan string, error) {
	p := &tpmProc{backend: r.Name, name: "cardbridge", log: filepath.Join(dir, "cardbridge.log"), done: make(chan struct{})}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, nil, nil, err
	}
	defer logf.Close()
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir, p.cmd.Stderr = dir, logf
	tpmProcAttr(p.cmd)
	in, err := p.cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, nil, nil, fmt.Errorf("starting the bridge: %w", err)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	r.onStop(func() error { in.Close(); return p.stop() })
	return p, in, lines, nil
}

// startPCSCD starts pcscd in the bridge's namespaces and waits for its
// socket.
func (c *Card) startPCSCD(r *Running) error {
	sock := filepath.Join(c.dir, "run", "pcscd.comm")
	p, err := tpmDaemon(r, c.dir, "pcscd", os.Environ(), "nsenter", "-t", strconv.Itoa(c.bridge.cmd.Process.Pid), "--mount", "--net",
		"pcscd", "--foreground", "--config", filepath.Join(c.dir, "conf"))
	if err != nil {
		return err
	}
	c.pcscd = p
	return p.waitSocket(sock)
}

// do sends the bridge one command and returns its answer.
func (c *Card) do(cmd string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		return "", fmt.Errorf("card bridge %s: %w: %s", cmd, err, c.bridge.tail())
	}
	select {
	case l, ok := <-c.lines:
		if !ok || strings.HasPrefix(l, "error") {
			return "", fmt.Errorf("card bridge %s: %q: %s", cmd, l, c.bridge.tail())
		}
		return l, nil
	case <-time.After(tpmStepTimeout):
		return "", fmt.Errorf("card bridge %s: no answer within %v", cmd, tpmStepTimeout)
	}
}

// Remove pulls the card from the reader: the bridge drops vpcd's
// connection and powers the card off (its login is gone).
func (c *Card) Remove() error { _, err := c.do("remove"); return err }

// Insert puts the card back; pcscd sees it at its next poll of the reader.
func (c *Card) Insert() error { _, err := c.do("insert"); return err }

// SetDelay makes every APDU wait d first: a slow card.
func (c *Card) SetDelay(d time.Duration) error {
	_, err := c.do(fmt.Sprintf("delay %d", d.Milliseconds()))
	return err
}

// SetTries sets the PIN tries left: 1 is the final try, 0 a blocked PIN.
// A right PIN resets them to 3.
func (c *Card) SetTries(n int) error { _, err := c.do(fmt.Sprintf("tries %d", n)); return err }

// APDUs returns how many command APDUs the card has answered.
func (c *Card) APDUs() (int, error) {
	l, err := c.do("stats")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimPrefix(l, "apdus "))
}

// RestartPCSCD stops pcscd (SIGTERM) and starts it again, as a system
// update or a crash and restart by systemd would.
func (c *Card) RestartPCSCD(r *Running) error {
	c.mu.Lock()
	old := c.pcscd
	c.mu.Unlock()
	if err := old.stop(); err != nil {
		return err
	}
	return c.startPCSCD(r)
}

// exited returns an error if the bridge or pcscd has ended.
func (c *Card) exited() error {
	for _, p := range []*tpmProc{c.bridge, c.pcscd} {
		if p == nil {
			continue
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v): %s", p.name, p.err, p.tail())
		default:
		}
	}
	return nil
}
