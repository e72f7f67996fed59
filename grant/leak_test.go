package grant

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLeakSentinels is the library's part of the secret-leak check (the
// CLI's is TestLeakCLI in cmd/mp-hsm). It drives Exchange, TokenSource,
// Client and its Transport, AltinnToken and AltinnTokenSource, on their
// good paths and their error paths (503s, a dropped connection, a refused
// grant, a timeout, a refused Altinn exchange, a resource server answering
// 401), with a debug-level slog handler that writes every record as text
// and as JSON. A recording transport under the Config keeps every grant
// sent and every token received. The test fails if any of them, or the
// signature part of any of them, appears in a log record or an error
// message.
func TestLeakSentinels(t *testing.T) {
	srv := newEmulator(t, nil)
	rec := &secretRecorder{base: http.DefaultTransport}
	var logs lockedBuffer
	logger := slog.New(slog.NewMultiHandler(
		slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}),
		slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}),
	))
	newCfg := func(i int) *Config {
		cfg := testConfig(t, srv, i)
		cfg.HTTPClient = &http.Client{Transport: rec, Timeout: 10 * time.Second}
		cfg.Logger = logger
		return cfg
	}
	cfg := newCfg(0)
	ctx := context.Background()
	var errs []string
	note := func(what string, err error) {
		t.Helper()
		if err != nil {
			errs = append(errs, what+": "+err.Error())
		}
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		note(what, err)
	}
	mustFail := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: want an error", what)
		}
		note(what, err)
	}

	// Good paths.
	tok, err := cfg.Exchange(ctx, Request{Scopes: []string{"test:read"}})
	must("Exchange", err)
	kidCfg := &Config{ClientID: testClient, Signer: thePKI(t).kidSigner(t), KeyID: testKid, Environment: emulatorEnv(srv),
		HTTPClient: cfg.HTTPClient, Logger: logger}
	_, err = kidCfg.Exchange(ctx, Request{Scopes: []string{"test:write"}, ConsumerOrg: "910000004"})
	must("Exchange with kid", err)
	ts := cfg.TokenSource(ctx, Request{Scopes: []string{"test:read", "test:write"}})
	for range 2 {
		_, err = ts.Token()
		must("TokenSource.Token", err)
	}
	at, err := cfg.AltinnToken(ctx, tok.AccessToken)
	must("AltinnToken", err)
	rec.addToken(at.AccessToken) // also recorded from the answer body
	_, err = cfg.AltinnTokenSource(ctx, Request{Scopes: []string{"altinn:serviceowner"}}).Token()
	must("AltinnTokenSource.Token", err)

	// A resource server that refuses the first token it sees (401), so that
	// the Transport drops it and retries with a new one, then answers 200;
	// and one that always refuses.
	var seenMu sync.Mutex
	seen := map[string]bool{}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bearer := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		rec.addToken(bearer)
		seenMu.Lock()
		first := len(seen) == 0
		seen[bearer] = true
		seenMu.Unlock()
		if first || r.URL.Path == "/always-401" {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(api.Close)
	hc := newCfg(1).Client(ctx, Request{Scopes: []string{"test:read"}})
	for _, path := range []string{"/", "/always-401"} {
		resp, err := hc.Post(api.URL+path, "text/plain", strings.NewReader("body"))
		must("Client.Post "+path, err)
		resp.Body.Close()
	}
	if len(seen) < 2 {
		t.Errorf("the Transport sent %d distinct tokens, want a new one after the 401", len(seen))
	}

	// Error paths.
	srv.FailNext(3, http.StatusServiceUnavailable)
	_, err = cfg.Exchange(ctx, testReq)
	mustFail("Exchange after three 503s", err)
	srv.FailNext(2, http.StatusServiceUnavailable)
	_, err = cfg.Exchange(ctx, testReq)
	must("Exchange after two 503s", err)
	srv.DropNext(1)
	_, err = cfg.Exchange(ctx, testReq)
	must("Exchange after a dropped answer", err)
	srv.DropNext(3)
	_, err = cfg.Exchange(ctx, testReq)
	mustFail("Exchange with every answer dropped", err)
	_, err = cfg.Exchange(ctx, Request{Scopes: []string{"test:admin"}})
	mustFail("Exchange of a scope not on the client", err)
	_, err = cfg.TokenSource(ctx, Request{Scopes: []string{"test:admin"}}).Token()
	mustFail("TokenSource.Token of a scope not on the client", err)
	_, err = newCfg(0).AltinnTokenSource(ctx, Request{Scopes: []string{"test:admin"}}).Token()
	mustFail("AltinnTokenSource.Token of a scope not on the client", err)
	other := newEmulator(t, nil) // its tokens are unknown to srv's Altinn exchange
	otherCfg := testConfig(t, other, 0)
	otherCfg.HTTPClient, otherCfg.Logger = cfg.HTTPClient, logger
	foreign, err := otherCfg.Exchange(ctx, testReq)
	must("Exchange at a second emulator", err)
	_, err = cfg.AltinnToken(ctx, foreign.AccessToken)
	mustFail("AltinnToken with a token the exchange refuses", err)
	srv.SetLatency(2 * time.Second)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = cfg.Exchange(short, testReq)
	cancel()
	mustFail("Exchange past its deadline", err)
	srv.SetLatency(0)

	grants, tokens := rec.secrets()
	if len(grants) < 10 || len(tokens) < 8 {
		t.Fatalf("recorded %d grants and %d tokens: the check would prove little", len(grants), len(tokens))
	}
	if logs.Len() == 0 {
		t.Fatal("nothing was logged at debug level")
	}
	texts := map[string]string{"the debug log": logs.String()}
	for i, e := range errs {
		texts[fmt.Sprintf("error %d", i)] = e
	}
	checkSentinels(t, texts, sentinels(grants, tokens))
}

// sentinel is a secret value the leak check looks for.
type sentinel struct{ name, value string }

// sentinels returns every grant and token, and the signature part of each.
func sentinels(grants, tokens []string) []sentinel {
	var out []sentinel
	add := func(kind string, i int, jwt string) {
		out = append(out, sentinel{fmt.Sprintf("%s %d", kind, i), jwt})
		if parts := strings.Split(jwt, "."); len(parts) == 3 && len(parts[2]) >= 16 {
			out = append(out, sentinel{fmt.Sprintf("the signature of %s %d", kind, i), parts[2]})
		}
	}
	for i, g := range grants {
		add("grant", i, g)
	}
	for i, tk := range tokens {
		add("token", i, tk)
	}
	return out
}

// checkSentinels fails t for each sentinel found in a text, naming both
// but printing neither.
func checkSentinels(t *testing.T, texts map[string]string, secrets []sentinel) {
	t.Helper()
	for where, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s.value) {
				t.Errorf("%s appears in %s", s.name, where)
			}
		}
	}
}

// secretRecorder is an http.RoundTripper that keeps the assertion of every
// token request and the access token of every answer (a JSON token
// response, or an Altinn token as text) before handing them on unchanged.
type secretRecorder struct {
	base http.RoundTripper

	mu     sync.Mutex
	grants []string
	tokens []string
}

func (r *secretRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.GetBody != nil {
		if body, err := req.GetBody(); err == nil {
			b, _ := io.ReadAll(body)
			body.Close()
			if v, err := url.ParseQuery(string(b)); err == nil && v.Get("assertion") != "" {
				r.mu.Lock()
				r.grants = append(r.grants, v.Get("assertion"))
				r.mu.Unlock()
			}
		}
	}
	resp, err := r.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &teeBody{ReadCloser: resp.Body, done: r.addAnswer}
	return resp, nil
}

// addAnswer records the token in an answer body, if it holds one.
func (r *secretRecorder) addAnswer(body []byte) {
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(body, &tr) == nil && tr.AccessToken != "" {
		r.addToken(tr.AccessToken)
	} else if s := strings.TrimSpace(string(body)); strings.HasPrefix(s, "eyJ") && strings.Count(s, ".") == 2 {
		r.addToken(s)
	}
}

func (r *secretRecorder) addToken(tok string) {
	if tok == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, have := range r.tokens {
		if have == tok {
			return
		}
	}
	r.tokens = append(r.tokens, tok)
}

func (r *secretRecorder) secrets() (grants, tokens []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.grants...), append([]string(nil), r.tokens...)
}

// teeBody keeps what is read from a body and hands it to done on Close.
type teeBody struct {
	io.ReadCloser
	buf  bytes.Buffer
	done func([]byte)
	once sync.Once
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.buf.Write(p[:n])
	if errors.Is(err, io.EOF) {
		b.once.Do(func() { b.done(b.buf.Bytes()) })
	}
	return n, err
}

func (b *teeBody) Close() error {
	b.once.Do(func() { b.done(b.buf.Bytes()) })
	return b.ReadCloser.Close()
}

// lockedBuffer is a bytes.Buffer safe for the concurrent writes of log
// handlers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
