package daemon

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestAllowedResources: with AllowedResources (--allowed-resources), a
// request for a resource outside the list, alone or beside allowed ones,
// gets 400 invalid_target (RFC 8707) before anything is signed or sent to
// Maskinporten; exact URIs and 'prefix*' entries are allowed.
func TestAllowedResources(t *testing.T) {
	t.Parallel()
	f := newDefFixture(t, func(c *Config) {
		c.AllowedResources = []string{"https://api.example.no/a, https://other.example/*"}
	})
	me := unixPeer(1001)
	wantTokenAnswer(t, f.ask(me, tokenForm("test:read", "https://api.example.no/a")))
	wantTokenAnswer(t, f.ask(me, tokenForm("test:read", "https://other.example/x/y")))
	signs, calls := f.signer.n.Load(), f.emu.Stats().TokenRequests
	for _, res := range [][]string{
		{"https://evil.example/"},
		{"https://api.example.no/ab"},
		{"https://api.example.no/a", "https://evil.example/"},
		{"https://other.exampl"},
	} {
		a := f.ask(me, tokenForm("test:read", res...))
		wantErrorAnswer(t, a, http.StatusBadRequest, errInvalidTarget)
		if !strings.Contains(a.Description, "--allowed-resources") {
			t.Errorf("%v: description %q does not name --allowed-resources", res, a.Description)
		}
	}
	if f.signer.n.Load() != signs || f.emu.Stats().TokenRequests != calls {
		t.Fatalf("refused resources were signed (%d signatures) or sent (%d requests)", f.signer.n.Load()-signs, f.emu.Stats().TokenRequests-calls)
	}
}

// TestResourcesPerCaller: without an allow-list, one caller may have at
// most MaxResourcesPerCaller distinct resources in the cache. The probe of
// issue 10 filled a 30-key cache with 30 resources and every new request
// got 503; now the caller's 4th resource gets 400 invalid_target saying
// why, nothing is signed for it, the cache keeps room, and other callers
// (and the caller's own cached and within-bound requests) are served.
func TestResourcesPerCaller(t *testing.T) {
	t.Parallel()
	f := newDefFixture(t, func(c *Config) {
		c.MaxKeys = 30
		c.MaxResourcesPerCaller = 3
		c.MaxKeysPerCaller = -1
	})
	flooder, other := unixPeer(1001), unixPeer(1002)
	res := func(i int) string { return fmt.Sprintf("https://api.example/r/%d", i) }
	for i := range 3 {
		wantTokenAnswer(t, f.ask(flooder, tokenForm("test:read", res(i))))
	}
	signs := f.signer.n.Load()
	for i := 3; i < 30; i++ {
		a := f.ask(flooder, tokenForm("test:read", res(i)))
		wantErrorAnswer(t, a, http.StatusBadRequest, errInvalidTarget)
		if !strings.Contains(a.Description, "uid 1001 already has tokens for 3 distinct resources") ||
			!strings.Contains(a.Description, "--max-resources-per-caller 3") {
			t.Fatalf("description %q does not say why", a.Description)
		}
	}
	if n := f.signer.n.Load() - signs; n != 0 {
		t.Fatalf("%d grants signed for refused resources", n)
	}
	if n := f.srv.cache.len(); n != 3 {
		t.Fatalf("%d keys in the cache, want the flooder's 3", n)
	}
	// Within the bound: a cached request, and a new key of known resources.
	wantTokenAnswer(t, f.ask(flooder, tokenForm("test:read", res(0))))
	wantTokenAnswer(t, f.ask(flooder, tokenForm("test:s1", res(0), res(2))))
	// Other callers are not affected.
	wantTokenAnswer(t, f.ask(other, tokenForm("test:read", res(29))))
	wantTokenAnswer(t, f.ask(other, tokenForm("test:s2")))
	// Once the cache has dropped the flooder's keys, it may ask again.
	f.srv.cache.clear()
	wantTokenAnswer(t, f.ask(flooder, tokenForm("test:read", res(10))))
}

// TestAllowedResourcesBoundsInstead: an allow-list of exact URIs bounds
// the resources itself; MaxResourcesPerCaller does not apply, while with a
// 'prefix*' entry it does.
func TestAllowedResourcesBoundsInstead(t *testing.T) {
	t.Parallel()
	var exact []string
	for i := range 5 {
		exact = append(exact, fmt.Sprintf("https://api.example/x/%d", i))
	}
	f := newDefFixture(t, func(c *Config) {
		c.AllowedResources = exact
		c.MaxResourcesPerCaller = 2
	})
	for _, r := range exact {
		wantTokenAnswer(t, f.ask(unixPeer(7), tokenForm("test:read", r)))
	}
	g := newDefFixture(t, func(c *Config) {
		c.AllowedResources = []string{"https://api.example/*"}
		c.MaxResourcesPerCaller = 2
	})
	for _, r := range exact[:2] {
		wantTokenAnswer(t, g.ask(unixPeer(7), tokenForm("test:read", r)))
	}
	wantErrorAnswer(t, g.ask(unixPeer(7), tokenForm("test:read", exact[2])), http.StatusBadRequest, errInvalidTarget)
}

// TestKeysPerCaller: one caller may have at most MaxKeysPerCaller keys
// (default half of MaxKeys) in the cache, so that distinct scopes (or
// consumer_org, pid values) cannot fill it: the flooder's third key gets
// 503 temporarily_unavailable naming the bound, and another caller still
// gets new keys. Before, the flooder filled the cache and the other caller
// got 503.
func TestKeysPerCaller(t *testing.T) {
	t.Parallel()
	f := newDefFixture(t, func(c *Config) { c.MaxKeys = 4 })
	flooder, other := tcpPeer("192.0.2.1:4000", defSecret), tcpPeer("192.0.2.2:4000", defSecret)
	wantTokenAnswer(t, f.ask(flooder, tokenForm("test:s0")))
	wantTokenAnswer(t, f.ask(flooder, tokenForm("test:s1")))
	a := f.ask(tcpPeer("192.0.2.1:4001", defSecret), tokenForm("test:s2")) // another port, the same caller
	wantErrorAnswer(t, a, http.StatusServiceUnavailable, errTemporarilyUnavailable)
	if !strings.Contains(a.Description, "192.0.2.1 has 2 distinct requests cached") || !strings.Contains(a.Description, "--max-keys-per-caller") {
		t.Fatalf("description %q does not say why", a.Description)
	}
	wantTokenAnswer(t, f.ask(other, tokenForm("test:s2")))
	wantTokenAnswer(t, f.ask(other, tokenForm("test:s3")))
	wantTokenAnswer(t, f.ask(flooder, tokenForm("test:s0"))) // its cached keys are still served
}
