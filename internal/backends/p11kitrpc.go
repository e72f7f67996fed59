//go:build cgo

package backends

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mp-hsm/mp-hsm/hsm"
)

// rpcStepTimeout bounds each step of starting the p11-kit server.
const rpcStepTimeout = 30 * time.Second

// RPCServer is the network HSM of the p11-kit-rpc backend: `p11-kit
// server` serving one SoftHSM2 token on a unix socket, reached through a
// proxy of the test's that can delay every message, as a slow link does.
// Tests stop it (as an HSM or its link dies: the server and every process
// it started are killed) and start it again.
type RPCServer struct {
	dir, server, uri string
	p11kit, module   string // the p11-kit command and the module it serves
	env              []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}

	ln    net.Listener
	delay atomic.Int64 // per message, in nanoseconds
	conns sync.WaitGroup
}

// StartP11KitRPC starts SoftHSM2 behind p11-kit's RPC, as a network HSM
// is reached: `p11-kit server --provider libsofthsm2.so pkcs11:token=...`
// in a process group of its own, exporting one token of the process's
// SoftHSM2 store (see softToken), and p11-kit-client.so as the module,
// told where the server is by P11_KIT_SERVER_ADDRESS. The address is a
// proxy in this process (see RPCServer.SetDelay). Every PKCS#11 call is a
// round trip; the server runs a new p11-kit-remote process per client
// connection.
func StartP11KitRPC(dir string) (_ *Running, err error) {
	client, err := P11KitClient()
	if err != nil {
		return nil, err
	}
	tok, release, err := softToken("conf-p11-kit-rpc")
	if err != nil {
		return nil, fmt.Errorf("p11-kit-rpc: %w", err)
	}
	r, err := softRunning("p11-kit-rpc", client, tok, release, "p11-kit", "p11-kit-modules", "softhsm2")
	if err != nil {
		return nil, fmt.Errorf("p11-kit-rpc: %w", err)
	}
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()
	s, err := ServeP11KitRPC(dir, tok.Module, tok.Label, []string{"SOFTHSM2_CONF=" + tok.Config})
	if err != nil {
		return nil, err
	}
	r.onStop(s.Close)
	r.RPC = s
	r.Env = append(r.Env, "P11_KIT_SERVER_ADDRESS="+s.Address())
	r.Notes = []string{
		"p11-kit's RPC: `p11-kit server --provider MODULE pkcs11:token=LABEL` exports a token on a unix socket, and " +
			"p11-kit-client.so reaches it at P11_KIT_SERVER_ADDRESS (here through a proxy that can delay each message). " +
			"Every PKCS#11 call is a round trip; the server starts a p11-kit-remote process per connection.",
		"After the server went away, p11-kit-client.so answers every call with CKR_DEVICE_ERROR until it is " +
			"finalised and initialised again (it does not reconnect by itself): mp-hsm serve reopens the module.",
		"p11-kit-client.so numbers slots itself (from 0x11), not as the module behind the server does: choose the token by label, serial or URI.",
	}
	return r, nil
}

// P11KitClient returns the path of p11-kit-client.so, the module that
// reaches a p11-kit server, or an error that says how to install it.
func P11KitClient() (string, error) {
	client := "/usr/lib/" + hsm.Multiarch() + "/pkcs11/p11-kit-client.so"
	if _, err := os.Stat(client); err != nil {
		return "", fmt.Errorf("p11-kit-rpc: %w (apt-get install p11-kit-modules)", err)
	}
	return client, nil
}

// ServeP11KitRPC serves the token labelled label of module over p11-kit's
// RPC, as StartP11KitRPC does for a token of its own: `p11-kit server`
// with env (such as SOFTHSM2_CONF) beside PATH, and the proxy in this
// process that clients reach at Address, with p11-kit-client.so. Close
// stops both.
func ServeP11KitRPC(dir, module, label string, env []string) (_ *RPCServer, err error) {
	p11kit, err := exec.LookPath("p11-kit")
	if err != nil {
		return nil, fmt.Errorf("p11-kit-rpc: %w (apt-get install p11-kit)", err)
	}
	s := &RPCServer{
		dir: dir, server: filepath.Join(dir, "server.sock"),
		uri: "pkcs11:token=" + label, p11kit: p11kit, module: module,
		env: append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, env...),
	}
	if s.ln, err = net.Listen("unix", filepath.Join(dir, "client.sock")); err != nil {
		return nil, fmt.Errorf("p11-kit-rpc: %w", err)
	}
	go s.accept()
	if err := s.Start(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// Address is the value of P11_KIT_SERVER_ADDRESS that leads
// p11-kit-client.so to the server, through the proxy.
func (s *RPCServer) Address() string { return "unix:path=" + s.ln.Addr().String() }

// Close stops the server and the proxy.
func (s *RPCServer) Close() error { return errors.Join(s.Stop(), s.close()) }

// Start starts the server and waits until it accepts connections. A
// server that runs already is an error.
func (s *RPCServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("p11-kit-rpc: the server runs already")
	}
	_ = os.Remove(s.server)
	log, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("p11-kit-rpc: %w", err)
	}
	defer log.Close()
	cmd := exec.Command(s.p11kit, "server", "-f", "-n", s.server, "--provider", s.module, s.uri)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = s.env, s.dir, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("p11-kit-rpc: starting p11-kit server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	for deadline := time.Now().Add(rpcStepTimeout); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.DialTimeout("unix", s.server, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			s.cmd = nil
			b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
			return fmt.Errorf("p11-kit-rpc: p11-kit server exited while starting: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("p11-kit-rpc: p11-kit server did not listen on %s within %v", s.server, rpcStepTimeout)
		}
	}
}

// Stop kills the server and every process it started (SIGKILL to its
// process group), as a network HSM that dies: connections break at once.
// Stopping a stopped server does nothing.
func (s *RPCServer) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *RPCServer) stopLocked() error {
	if s.cmd == nil {
		return nil
	}
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("p11-kit-rpc: p11-kit server (pid %d) still runs after SIGKILL", pgid)
	}
	s.cmd = nil
	_ = os.Remove(s.server)
	return nil
}

// SetDelay makes the proxy wait d before it passes on each message from
// the client to the server: about d per PKCS#11 call.
func (s *RPCServer) SetDelay(d time.Duration) { s.delay.Store(int64(d)) }

// close stops the proxy.
func (s *RPCServer) close() error {
	err := s.ln.Close()
	s.conns.Wait()
	return err
}

// accept serves the proxy's connections until its listener is closed.
func (s *RPCServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			s.relay(c)
		}()
	}
}

// relay passes one client connection on to the server, each client
// message after the delay; when either side ends, both are closed.
func (s *RPCServer) relay(c net.Conn) {
	defer c.Close()
	u, err := net.DialTimeout("unix", s.server, time.Second)
	if err != nil {
		return // the server is down: the client sees the connection end
	}
	defer u.Close()
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(c, u)
		done <- struct{}{}
	}()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if d := time.Duration(s.delay.Load()); d > 0 {
					time.Sleep(d)
				}
				if _, werr := u.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}()
	<-done
}
