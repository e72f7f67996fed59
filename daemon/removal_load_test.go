package daemon_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/daemon"
)

// TestRemovalUnderLoad pulls the card out and puts it back while clients
// keep asking: a hot (cached) key is served throughout and never expired;
// new keys get 503 temporarily_unavailable while the card is away, and
// tokens again once it is back, without a restart. Bounded: about 3 s,
// loopback only.
func TestRemovalUnderLoad(t *testing.T) {
	t.Parallel()
	r := &removable{inner: sharedOpener(t)}
	f := newFixture(t, options{noTCP: true, modify: func(c *daemon.Config) {
		c.OpenSigner = r.open
		c.ProbeInterval = 50 * time.Millisecond
		c.ReconnectMin = 50 * time.Millisecond
		c.ReconnectMax = 200 * time.Millisecond
		c.MaxResourcesPerCaller = -1 // a new resource for every request, from one caller
	}})
	wantToken(t, f.post(scopeForm("test:read")))

	var (
		hotOK, hotBad atomic.Int64
		newOK, new503 atomic.Int64
		newOther      atomic.Int64
		seq           atomic.Int64
		stop          = make(chan struct{})
		wg            sync.WaitGroup
		mu            sync.Mutex
		firstBad      string
	)
	bad := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if firstBad == "" {
			firstBad = s
		}
	}
	post := func(form string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://mp-hsm/token", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := f.unix.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if w%2 == 0 { // the hot key
					code, body := post(scopeForm("test:read").Encode())
					if code == http.StatusOK && !strings.Contains(body, `"expires_in":0`) && !strings.Contains(body, `"expires_in":-`) {
						hotOK.Add(1)
					} else {
						hotBad.Add(1)
						bad(fmt.Sprintf("hot key: %d %s", code, body))
					}
					continue
				}
				form := scopeForm("test:read", "resource", fmt.Sprintf("https://api.example/load/%d", seq.Add(1))).Encode()
				code, body := post(form)
				switch {
				case code == http.StatusOK:
					newOK.Add(1)
				case code == http.StatusServiceUnavailable && strings.Contains(body, "temporarily_unavailable"):
					new503.Add(1)
				default:
					newOther.Add(1)
					bad(fmt.Sprintf("new key: %d %s", code, body))
				}
				time.Sleep(5 * time.Millisecond)
			}
		}(w)
	}
	time.Sleep(500 * time.Millisecond)
	r.set(true) // out
	waitFor(t, 5*time.Second, "/readyz to turn red", func() bool { code, _ := f.get("/readyz"); return code == http.StatusServiceUnavailable })
	time.Sleep(700 * time.Millisecond)
	before := newOK.Load()
	r.set(false) // back
	waitFor(t, 5*time.Second, "/readyz to turn green", func() bool { code, _ := f.get("/readyz"); return code == http.StatusOK })
	waitFor(t, 5*time.Second, "new keys to be served again", func() bool { return newOK.Load() > before+3 })
	close(stop)
	wg.Wait()

	t.Logf("hot key: %d served, %d bad; new keys: %d served, %d refused with 503, %d other",
		hotOK.Load(), hotBad.Load(), newOK.Load(), new503.Load(), newOther.Load())
	if hotBad.Load() != 0 || newOther.Load() != 0 {
		t.Fatalf("unexpected answers under removal; first: %s", firstBad)
	}
	if new503.Load() == 0 || hotOK.Load() < 20 {
		t.Fatalf("the load did not exercise the removal: %d hot served, %d new refused", hotOK.Load(), new503.Load())
	}
}
