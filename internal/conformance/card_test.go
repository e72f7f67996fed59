//go:build cgo

package conformance

import (
	"crypto/rsa"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"testing"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/p11spy"
	"github.com/mp-hsm/mp-hsm/internal/testexec"
)

// What issue 21 asks of `mp-hsm serve` on a card that leaves and comes
// back: a probe that notices a pulled card, and readiness soon after it is
// back.
const (
	noticeRemoval = 5 * time.Second
	readyAgain    = 2 * time.Second
)

// runCard tests the smart card (backends.StartCard): it comes with its key
// and certificates, so the features that generate keys do not apply;
// instead the card is pulled, slowed down and its PIN counter set.
func (fx *fixture) runCard(t *testing.T) {
	card := fx.r.Card
	started := fx.step(t, "start", func(c *check) {
		c.note("module %s", fx.r.Module)
		fx.rsaCert = card.Key.Cert
		fx.rsaPub = card.Key.Cert.PublicKey.(*rsa.PublicKey)
		var err error
		if fx.mod, err = hsm.Open(fx.r.Module); err != nil {
			c.fatal("hsm.Open(%s): %v", fx.r.Module, err)
		}
		atEnd(fx.mod.Close)
	})
	if !started || !fx.step(t, "login", fx.login) {
		return
	}
	fx.feature(t, "list", fx.cardList)
	fx.feature(t, "mp-hsm-token", fx.tokenRun)
	fx.feature(t, "doctor", fx.doctorRun)
	fx.feature(t, "mp-hsm-serve", fx.serveRun)
	fx.feature(t, "wrong-pin", fx.wrongPIN)
	fx.feature(t, "pin-flags", fx.pinFlags)
	fx.feature(t, "final-try", func(c *check) { fx.refusedPIN(c, 1, "final") })
	fx.feature(t, "locked", func(c *check) { fx.refusedPIN(c, 0, "lock") })
	if err := card.SetTries(3); err != nil {
		t.Fatal(err)
	}
	fx.feature(t, "slow-card", fx.slowCard)
	fx.faultFeature(t, "pull-idle", fx.pullIdle)
	fx.faultFeature(t, "pull-signing", fx.pullSigning)
	fx.faultFeature(t, "pcscd-restart", fx.pcscdRestart)
}

// cardList finds the card's token, its key and both certificates.
func (fx *fixture) cardList(c *check) {
	slots, err := fx.mod.Slots()
	if err != nil {
		c.fatal("%v", err)
	}
	c.note("the module lists %s", plural(len(slots), "slot"))
	keys, err := fx.tok.Keys()
	if err != nil {
		c.fatal("%v", err)
	}
	found := false
	for _, k := range keys {
		if k.IDHex() == fmt.Sprintf("%x", fx.r.Card.Key.ID) {
			found = true
			if pub, ok := k.Public.(*rsa.PublicKey); !ok || !pub.Equal(fx.rsaPub) {
				c.fail("key %s shows public key %T, not the card's", k.IDHex(), k.Public)
			}
		}
	}
	if !found {
		c.fail("key %x not listed: %v", fx.r.Card.Key.ID, keys)
	}
	certs, err := fx.tok.Certificates()
	if err != nil {
		c.fatal("%v", err)
	}
	var leaf, inter bool
	for _, ct := range certs {
		leaf = leaf || ct.Cert.Equal(fx.rsaCert)
		inter = inter || ct.Cert.Equal(fx.r.Card.Intermediate)
	}
	if !leaf || !inter {
		c.fail("certificates listed: %d, leaf among them %v, issuing CA %v", len(certs), leaf, inter)
	}
	c.note("%s, %s", plural(len(keys), "key"), plural(len(certs), "certificate"))
}

// doctorRun runs `mp-hsm doctor` on the card against the emulator: every
// check passes.
func (fx *fixture) doctorRun(c *check) {
	dir := c.t.TempDir()
	args := append([]string{"doctor"}, fx.tokenArgs(fx.r.Module)[1:]...)
	res := fx.runCLI(c, fx.cliEnv(dir, "MP_HSM_PIN="+fx.r.PIN), args...)
	if res.Code != 0 {
		c.fatal("exit %d, want 0: %s; stdout: %s", res.Code, describe(res), res.Stdout)
	}
}

// refusedPIN sets the card's PIN tries left to tries (1: the final try, 0:
// blocked) and runs `mp-hsm token` with the right PIN through pkcs11-spy:
// exit 3, no C_Login, and stderr says why (it contains word).
func (fx *fixture) refusedPIN(c *check, tries int, word string) {
	if err := fx.r.Card.SetTries(tries); err != nil {
		c.fatal("%v", err)
	}
	dir := c.t.TempDir()
	log := filepath.Join(dir, "spy.log")
	module, spyEnv := fx.spied(log)
	res := fx.runCLI(c, fx.cliEnv(dir, append(spyEnv, "MP_HSM_PIN="+fx.r.PIN)...), fx.tokenArgs(module)...)
	if res.Code != exitToken {
		c.fail("exit %d, want %d: %s", res.Code, exitToken, describe(res))
	}
	counts := p11spy.Counts(p11spy.Read(c.t, log))
	if counts["C_Login"] != 0 {
		c.fail("%d C_Login calls with %d tries left, want none", counts["C_Login"], tries)
	}
	if !strings.Contains(strings.ToLower(res.Stderr), word) {
		c.fail("stderr does not say %q: %s", word, strings.TrimSpace(res.Stderr))
	}
	c.note("mp-hsm said: %s", strings.TrimSpace(res.Stderr))
}

// slowCard runs `mp-hsm token` on a card that takes 50 ms per APDU.
func (fx *fixture) slowCard(c *check) {
	card := fx.r.Card
	if err := card.SetDelay(50 * time.Millisecond); err != nil {
		c.fatal("%v", err)
	}
	c.t.Cleanup(func() { card.SetDelay(0) })
	before, err := card.APDUs()
	if err != nil {
		c.fatal("%v", err)
	}
	fx.tokenRun(c)
	after, err := card.APDUs()
	if err != nil {
		c.fatal("%v", err)
	}
	c.note("50 ms per APDU; one mp-hsm token sent %d APDUs", after-before)
}

// readyz returns serve's /readyz status, 0 if it did not answer.
func readyz(client *http.Client) int {
	resp, err := client.Get("http://mp-hsm/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitReady polls /readyz every 100 ms until it answers 200 (want true) or
// anything else (want false), for at most d, and returns how long it took
// and whether it got there.
func waitReady(client *http.Client, want bool, d time.Duration) (time.Duration, bool) {
	start := time.Now()
	for {
		if (readyz(client) == http.StatusOK) == want {
			return time.Since(start), true
		}
		if time.Since(start) > d {
			return time.Since(start), false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startReady starts serve and waits until it is ready.
func (fx *fixture) startReady(c *check) (*http.Client, *testexec.Proc) {
	client, proc := fx.startServe(c)
	if _, ok := waitReady(client, true, 30*time.Second); !ok {
		_, stderr := proc.Output()
		c.fatal("serve not ready within 30 s; stderr: %s", stderr)
	}
	return client, proc
}

// backAgain inserts the card (unless pcscd was restarted instead), waits
// for readiness and asks for a token serve has not cached, which signs.
func (fx *fixture) backAgain(c *check, client *http.Client, proc *testexec.Proc, resource string) {
	took, ok := waitReady(client, true, 30*time.Second)
	switch {
	case !ok:
		c.fail("serve not ready 30 s after the token came back (issue 21: within %v)", readyAgain)
	case took > readyAgain:
		c.fail("serve ready %v after the token came back, want within %v (issue 21: poll presence instead of waiting out the reconnect backoff)",
			took.Round(100*time.Millisecond), readyAgain)
	default:
		c.note("ready again after %v", took.Round(100*time.Millisecond))
	}
	status, answer, err := postToken(client, resource)
	if err != nil || status != http.StatusOK {
		_, stderr := proc.Output()
		c.fail("the first request after the token came back: %d %s %v (issue 21: retry once after a reconnect instead of 503); serve's stderr: %s",
			status, answer.Error, err, lastLines(stderr, 5))
		return
	}
	fx.checkAccessToken(c, answer.AccessToken)
}

// noticeGone waits for serve to turn not ready after the card left.
func noticeGone(c *check, client *http.Client) {
	took, ok := waitReady(client, false, noticeRemoval)
	if !ok {
		c.fail("serve still ready %v after the token left (issue 21: a probe of the slot's token-present flag and the session, not OpenSC's cached C_GetTokenInfo)", noticeRemoval)
		return
	}
	c.note("not ready %v after the token left", took.Round(100*time.Millisecond))
}

// pullIdle pulls the card while serve is idle, then puts it back.
func (fx *fixture) pullIdle(c *check) {
	card := fx.r.Card
	client, proc := fx.startReady(c)
	defer fx.stopServe(c, proc)
	if err := card.Remove(); err != nil {
		c.fatal("%v", err)
	}
	noticeGone(c, client)
	if err := card.Insert(); err != nil {
		c.fatal("%v", err)
	}
	fx.backAgain(c, client, proc, "https://card.example/pull-idle")
}

// pullSigning pulls the card while serve signs a grant on a slow card.
func (fx *fixture) pullSigning(c *check) {
	card := fx.r.Card
	client, proc := fx.startReady(c)
	defer fx.stopServe(c, proc)
	if err := card.SetDelay(100 * time.Millisecond); err != nil {
		c.fatal("%v", err)
	}
	defer card.SetDelay(0)
	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		status, _, err := postToken(client, "https://card.example/pull-signing")
		done <- result{status, err}
	}()
	time.Sleep(250 * time.Millisecond) // the request is at the card
	if err := card.Remove(); err != nil {
		c.fatal("%v", err)
	}
	select {
	case res := <-done:
		if res.err != nil || (res.status != http.StatusOK && res.status != http.StatusServiceUnavailable) {
			c.fail("the request the card was pulled from: %d %v, want 200 or 503", res.status, res.err)
		}
		c.note("the request the card was pulled from got %d", res.status)
	case <-time.After(30 * time.Second):
		c.fatal("the request the card was pulled from had no answer within 30 s")
	}
	card.SetDelay(0)
	if err := card.Insert(); err != nil {
		c.fatal("%v", err)
	}
	fx.backAgain(c, client, proc, "https://card.example/after-pull-signing")
}

// pcscdRestart restarts pcscd while serve is idle.
func (fx *fixture) pcscdRestart(c *check) {
	client, proc := fx.startReady(c)
	defer fx.stopServe(c, proc)
	if err := fx.r.Card.RestartPCSCD(fx.r); err != nil {
		c.fatal("%v", err)
	}
	fx.backAgain(c, client, proc, "https://card.example/pcscd-restart")
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
