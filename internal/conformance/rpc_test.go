//go:build cgo

package conformance

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// rpcFaults runs `mp-hsm serve` on the p11-kit-rpc backend and stops and
// starts the server under it: while it is idle (noticed by the probe
// within noticeRemoval, ready within readyAgain of its return), then while
// it signs (the request is made again after the reconnect), and signs
// over a link that delays every message. It kills the server's
// connections of this process too: it runs after every other feature.
func (fx *fixture) rpcFaults(c *check) {
	rpc := fx.r.RPC
	client, proc := fx.startReady(c)
	defer func() {
		rpc.SetDelay(0)
		if err := rpc.Start(); err != nil && !strings.Contains(err.Error(), "runs already") {
			c.fail("%v", err)
		}
		_ = proc.Process.Signal(syscall.SIGTERM)
		proc.Wait()
	}()
	n := 0
	post := func() (int, string) {
		n++ // a new resource each time: a new grant, signed on the token
		status, answer, err := postToken(client, fmt.Sprintf("https://rpc.example/%d", n))
		if err != nil {
			return status, err.Error()
		}
		return status, answer.Error
	}
	if code, msg := post(); code != http.StatusOK {
		c.fatal("POST /token: %d %s", code, msg)
	}

	// Idle: the probe notices the dead server.
	if err := rpc.Stop(); err != nil {
		c.fatal("%v", err)
	}
	noticeGone(c, client)
	if code, _ := post(); code != http.StatusServiceUnavailable {
		c.fail("a request while the server is down: %d, want 503", code)
	}
	if err := rpc.Start(); err != nil {
		c.fatal("%v", err)
	}
	fx.backAgain(c, client, proc, "https://rpc.example/restarted")

	// While signing: the server dies under a request (each message held
	// 100 ms, so the request is on the link) and comes straight back.
	rpc.SetDelay(100 * time.Millisecond)
	answer := make(chan string, 1)
	go func() {
		code, msg := post()
		answer <- fmt.Sprintf("%d %s", code, msg)
	}()
	time.Sleep(150 * time.Millisecond)
	if err := rpc.Stop(); err != nil {
		c.fatal("%v", err)
	}
	rpc.SetDelay(0)
	if err := rpc.Start(); err != nil {
		c.fatal("%v", err)
	}
	got := <-answer
	c.note("server killed while signing and restarted: the request got %s", strings.TrimSpace(got))
	if !strings.HasPrefix(got, "200 ") {
		c.fail("the request under which the server died and came back: %s, want 200 (made again after the reconnect)", got)
	}

	// A slow link: 20 ms per message.
	rpc.SetDelay(20 * time.Millisecond)
	start := time.Now()
	if code, msg := post(); code != http.StatusOK {
		c.fail("POST /token over a link slowed by 20 ms a message: %d %s", code, msg)
	}
	c.note("a new token over a link slowed by 20 ms a message took %v", time.Since(start).Round(time.Millisecond))
	rpc.SetDelay(0)
}
