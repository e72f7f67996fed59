//go:build cgo

package daemon_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
)

// The interop tests: unmodified OAuth 2 client libraries get a token from
// the daemon (in process, on TCP, against SoftHSM2 and the emulator) with
// both client-authentication methods and a secret with special
// characters, and use it on a resource server that accepts only tokens
// the emulator signed.

// interopSecret is form-decodable to another string, so a daemon that
// decoded raw Basic credentials only, or never, would refuse someone.
var interopSecret = specialSecrets[1]

// interopScope is the scope the clients ask for and the resource server
// demands.
const interopScope = "test:read"

// resourceServer is a protected resource: GET /r/NAME answers 200 with the
// token's client_id only for a bearer token the emulator signed, not
// expired, with interopScope; anything else gets 401. It records the
// names asked for with such a token.
type resourceServer struct {
	url string
	mu  sync.Mutex
	ok  []string
}

func newResourceServer(t *testing.T, f *fixture) *resourceServer {
	t.Helper()
	rs := &resourceServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bearer, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		var c jwt.MapClaims
		_, err := jwt.ParseWithClaims(bearer, &c, func(*jwt.Token) (any, error) { return f.emu.PublicKey(), nil },
			jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(f.emu.Issuer()), jwt.WithExpirationRequired())
		scope, _ := c["scope"].(string)
		if !found || err != nil || !slices.Contains(strings.Fields(scope), interopScope) {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		rs.mu.Lock()
		rs.ok = append(rs.ok, strings.TrimPrefix(r.URL.Path, "/r/"))
		rs.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"client_id": c["client_id"]})
	}))
	t.Cleanup(srv.Close)
	rs.url = srv.URL
	return rs
}

// served reports whether a request for name came with a valid token.
func (rs *resourceServer) served(name string) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return slices.Contains(rs.ok, name)
}

// interopFixture is a daemon whose TCP callers need interopSecret, and a
// resource server.
func interopFixture(t *testing.T) (*fixture, *resourceServer) {
	t.Helper()
	f := newFixture(t, options{modify: func(c *daemon.Config) { c.ClientSecret = interopSecret }})
	return f, newResourceServer(t, f)
}

var authMethods = []string{"client_secret_basic", "client_secret_post"}

// TestInteropGo: golang.org/x/oauth2/clientcredentials, both methods.
func TestInteropGo(t *testing.T) {
	t.Parallel()
	f, rs := interopFixture(t)
	for _, method := range authMethods {
		style := oauth2.AuthStyleInHeader // form-encodes the credentials
		if method == "client_secret_post" {
			style = oauth2.AuthStyleInParams
		}
		cc := clientcredentials.Config{ClientID: testClient, ClientSecret: interopSecret,
			TokenURL: f.tcp + "/token", Scopes: []string{interopScope}, AuthStyle: style}
		ctx := context.WithValue(context.Background(), oauth2.HTTPClient, f.client)
		resp, err := cc.Client(ctx).Get(rs.url + "/r/go-" + method)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !rs.served("go-"+method) {
			t.Fatalf("%s: the resource server answered %d %s", method, resp.StatusCode, b)
		}
	}
	// The wrong secret gives the library's error with invalid_client.
	cc := clientcredentials.Config{ClientID: testClient, ClientSecret: "wrong", TokenURL: f.tcp + "/token", Scopes: []string{interopScope}}
	_, err := cc.Token(context.WithValue(context.Background(), oauth2.HTTPClient, f.client))
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Fatalf("wrong secret: %v, want a RetrieveError invalid_client", err)
	}
}

// need skips t for a missing tool or package, or fails it under CI.
func need(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format+" (CI is set: this fails)", args...)
	}
	t.Skipf(format+" (with CI set, this fails the test)", args...)
}

// clientAnswer is a line a library script prints: one library and method.
type clientAnswer struct {
	Library        string            `json:"library"`
	Version        string            `json:"version"`
	Method         string            `json:"method"`
	TokenType      string            `json:"token_type"`
	ExpiresIn      float64           `json:"expires_in"`
	Discovered     map[string]string `json:"discovered"`
	ResourceStatus int               `json:"resource_status"`
	ResourceAnswer string            `json:"resource_answer"`
	Error          string            `json:"error"`
}

// runClients runs a script that tries each of libraries with each auth
// method (one process, so that the libraries load once) and checks for
// each that it got a bearer token and that the resource server took it
// for prefix-LIBRARY-METHOD. The secret goes in the environment, never in
// argv. It returns the answers by library and method.
func runClients(t *testing.T, rs *resourceServer, cmd *testexec.Cmd, prefix string, libraries []string) map[string]clientAnswer {
	t.Helper()
	res := testexec.Run(t, cmd)
	if res.Code == 77 {
		need(t, "%s", strings.TrimSpace(res.Stderr))
	}
	if res.Code != 0 {
		t.Fatalf("%s failed:\n%s", prefix, res)
	}
	got := map[string]clientAnswer{}
	for _, line := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
		var a clientAnswer
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("%s printed %q: %v\nstderr: %s", prefix, line, err, res.Stderr)
		}
		got[a.Library+"/"+a.Method] = a
	}
	for _, lib := range libraries {
		for _, method := range authMethods {
			a, ok := got[lib+"/"+method]
			name := prefix + "-" + lib + "-" + method
			switch {
			case !ok:
				t.Errorf("%s: no answer\n%s", name, res)
			case a.Error != "":
				t.Errorf("%s %s, %s: %s", lib, a.Version, method, a.Error)
			case !strings.EqualFold(a.TokenType, "bearer") || a.ExpiresIn <= 60 || a.ResourceStatus != http.StatusOK ||
				!strings.Contains(a.ResourceAnswer, testClient) || !rs.served(name):
				t.Errorf("%s: %+v; want a bearer token that the resource server accepted", name, a)
			default:
				t.Logf("%s %s, %s: token accepted by the resource server", lib, a.Version, method)
			}
		}
	}
	return got
}

// TestInteropPython: Debian's python3-authlib and python3-requests-oauthlib
// under /usr/bin/python3, both methods. Both send HTTP Basic credentials
// without form-encoding them.
func TestInteropPython(t *testing.T) {
	t.Parallel()
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		need(t, "%s is missing (apt-get install python3-authlib python3-requests-oauthlib)", python)
	}
	script, err := filepath.Abs("testdata/interop/python/clients.py")
	if err != nil {
		t.Fatal(err)
	}
	f, rs := interopFixture(t)
	cmd := testexec.Command(t, time.Minute, python, script)
	cmd.Env = testexec.Env(t.TempDir(), "TOKEN_URL="+f.tcp+"/token", "CLIENT_ID="+testClient,
		"CLIENT_SECRET="+interopSecret, "SCOPE="+interopScope, "RESOURCE_URL="+rs.url+"/r",
		// oauthlib refuses plain HTTP unless told (the daemon listens
		// on loopback).
		"OAUTHLIB_INSECURE_TRANSPORT=1")
	runClients(t, rs, cmd, "python", []string{"authlib", "requests-oauthlib"})
}

// TestInteropNode: openid-client (the daemon found by discovery()) and
// simple-oauth2 from npm, both methods. Both form-encode HTTP Basic
// credentials.
func TestInteropNode(t *testing.T) {
	t.Parallel()
	node := nodeTool(t, "node")
	modules := nodeModules(t, nodeTool(t, "npm"))
	script, err := filepath.Abs("testdata/interop/node/clients.mjs")
	if err != nil {
		t.Fatal(err)
	}
	f, rs := interopFixture(t)
	cmd := testexec.Command(t, time.Minute, node, script)
	cmd.Env = testexec.Env(t.TempDir(), "ISSUER="+f.tcp, "CLIENT_ID="+testClient, "CLIENT_SECRET="+interopSecret,
		"SCOPE="+interopScope, "RESOURCE_URL="+rs.url+"/r", "NODE_PATH="+modules)
	got := runClients(t, rs, cmd, "node", []string{"openid-client", "simple-oauth2"})
	for _, method := range authMethods {
		if d := got["openid-client/"+method].Discovered; d["issuer"] != f.tcp || d["token_endpoint"] != f.tcp+"/token" {
			t.Errorf("openid-client, %s: discovery found %v, want issuer %s", method, d, f.tcp)
		}
	}
}

// nodeTool returns the path of node or npm.
func nodeTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		need(t, "%s is not installed (Node.js 20 or later; apt-get install nodejs npm, or make deps)", name)
	}
	return p
}

// nodeModules installs testdata/interop/node's locked packages with npm ci
// (no install scripts) and returns their node_modules. The install is kept
// in the user's cache directory under the hash of package.json and the
// lock, so only a changed lock installs again; npm's own cache is there too.
func nodeModules(t *testing.T, npm string) string {
	t.Helper()
	src := "testdata/interop/node"
	h := sha256.New()
	for _, name := range []string{"package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	base, err := os.UserCacheDir()
	if err == nil {
		base = filepath.Join(base, "mp-hsm-test")
		err = os.MkdirAll(base, 0o755)
	}
	if err != nil { // no cache directory: install for this run only
		base = t.TempDir()
	}
	dir := filepath.Join(base, "node-"+hex.EncodeToString(h.Sum(nil))[:16])
	const done = ".mp-hsm-installed"
	if _, err := os.Stat(filepath.Join(dir, "node_modules", done)); err == nil {
		return filepath.Join(dir, "node_modules")
	}
	tmp, err := os.MkdirTemp(base, "installing-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	for _, name := range []string{"package.json", "package-lock.json"} {
		b, _ := os.ReadFile(filepath.Join(src, name))
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := testexec.Command(t, 3*time.Minute, npm, "ci", "--ignore-scripts", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=warn")
	cmd.Dir = tmp
	cmd.Env = testexec.Env(tmp, "npm_config_cache="+filepath.Join(base, "npm-cache"), "npm_config_update_notifier=false")
	res := testexec.Run(t, cmd)
	if res.Code != 0 {
		need(t, "npm ci of %s failed (is the npm registry reachable?):\n%s", src, res)
	}
	if err := os.WriteFile(filepath.Join(tmp, "node_modules", done), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", done)); err != nil {
		os.RemoveAll(dir) // an install that did not finish
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another test process installed it first: use that one.
		if _, serr := os.Stat(filepath.Join(dir, "node_modules", done)); serr != nil {
			t.Fatalf("keeping the install: %v", err)
		}
	}
	return filepath.Join(dir, "node_modules")
}
