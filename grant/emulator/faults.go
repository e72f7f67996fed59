package emulator

import (
	"net/http"
	"time"
)

// FailNext makes the next n requests to /token answer status (such as 503)
// with a Maskinporten-shaped error, before looking at the grant; 503 and 429
// carry Retry-After: 1.
func (s *Server) FailNext(n int, status int) { s.locked(func() { s.failN, s.failStatus = n, status }) }

// SetLatency delays every answer by d; Close cuts the delay short.
func (s *Server) SetLatency(d time.Duration) { s.locked(func() { s.latency = d }) }

// DropNext makes the next n requests to /token fail mid-answer: the
// connection closes within the body of a 200 answer (an unexpected EOF).
func (s *Server) DropNext(n int) { s.locked(func() { s.dropN = n }) }

// SetDateOffset makes the Date header of every answer lie by d.
func (s *Server) SetDateOffset(d time.Duration) { s.locked(func() { s.dateOffset = d }) }

func (s *Server) date() string {
	var off time.Duration
	s.locked(func() { off = s.dateOffset })
	return s.now().Add(off).UTC().Format(http.TimeFormat)
}

func (s *Server) fault() (drop bool, failStatus int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.TokenRequests++
	switch {
	case s.dropN > 0:
		s.dropN--
		s.stats.Injected++
		return true, 0
	case s.failN > 0:
		s.failN--
		s.stats.Injected++
		return false, s.failStatus
	}
	return false, 0
}

// drop writes the head of a 200 answer and part of its body, and hangs up.
func (s *Server) drop(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = buf.WriteString("HTTP/1.1 200 OK\r\n" +
		"Date: " + s.date() + "\r\n" +
		"Content-Type: application/json;charset=UTF-8\r\n" +
		"Content-Length: 1024\r\n" +
		"\r\n" +
		`{"access_token":"eyJ`)
	_ = buf.Flush()
}
