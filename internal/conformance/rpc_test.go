package conformance

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// The bounds the daemon keeps on a network HSM (issue 21): a dead server
// noticed while idle within detectBound, and ready again within
// recoverBound of its return.
const (
	detectBound  = 5 * time.Second
	recoverBound = 2 * time.Second
)

// rpcFaults runs `mp-hsm serve` on the p11-kit-rpc backend and stops and
// starts the server under it: while it is idle (noticed by the probe),
// then while it signs (the request is made again after the reconnect),
// and signs over a link that delays every message. It kills the server's
// connections of this process too: it runs after every other feature.
func (fx *fixture) rpcFaults(c *check) {
	rpc := fx.r.RPC
	proc, client := fx.startServe(c)
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
		form := url.Values{"grant_type": {"client_credentials"}, "scope": {confScope},
			"resource": {fmt.Sprintf("https://rpc.example/%d", n)}}
		resp, err := client.PostForm("http://mp-hsm/token", form)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var a struct{ Error, ErrorDescription string }
		_ = json.NewDecoder(resp.Body).Decode(&a)
		return resp.StatusCode, a.Error + " " + a.ErrorDescription
	}
	ready := func() bool {
		resp, err := client.Get("http://mp-hsm/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	// until waits for ready() to be want, for at most 15 s, and returns
	// how long it took.
	until := func(what string, want bool) time.Duration {
		start := time.Now()
		for !time.Now().After(start.Add(15 * time.Second)) {
			if ready() == want {
				return time.Since(start)
			}
			time.Sleep(20 * time.Millisecond)
		}
		_, stderr := proc.Output()
		c.fatal("%s: /readyz did not change in 15 s; serve's stderr: %s", what, stderr)
		return 0
	}
	until("start", true)
	if code, msg := post(); code != http.StatusOK {
		c.fatal("POST /token: %d %s", code, msg)
	}

	// Idle: the probe notices the dead server.
	if err := rpc.Stop(); err != nil {
		c.fatal("%v", err)
	}
	detect := until("server stopped while idle", false)
	c.note("server stopped while idle: not ready after %v", detect.Round(10*time.Millisecond))
	if detect > detectBound {
		c.fail("a dead server noticed after %v, want within %v", detect, detectBound)
	}
	if code, _ := post(); code != http.StatusServiceUnavailable {
		c.fail("a request while the server is down: %d, want 503", code)
	}
	if err := rpc.Start(); err != nil {
		c.fatal("%v", err)
	}
	back := until("server restarted", true)
	c.note("server restarted: ready after %v", back.Round(10*time.Millisecond))
	if back > recoverBound {
		c.fail("ready %v after the server came back, want within %v", back, recoverBound)
	}
	if code, msg := post(); code != http.StatusOK {
		c.fail("POST /token after the restart: %d %s", code, msg)
	}

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
