//go:build cgo

package crypto11interop

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ThalesGroup/crypto11"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/p11spy"
	"github.com/mp-hsm/mp-hsm/signer/p11"
)

func init() {
	scenarios["mp-hsm closes first"] = mphsmClosesFirst
	scenarios["crypto11 closes first"] = crypto11ClosesFirst
	scenarios["mp-hsm opens first"] = mphsmOpensFirst
	scenarios["crypto11 reconfigures"] = crypto11Reconfigures
}

// openCrypto11 configures a crypto11 Context on the token and finds the
// key.
func (c *child) openCrypto11() (*crypto11.Context, crypto11.Signer, error) {
	ctx, err := crypto11.Configure(&crypto11.Config{
		Path: c.env(envModule), TokenLabel: c.env(envToken), Pin: c.env(envPIN),
	})
	if err != nil {
		return nil, nil, err
	}
	key, err := ctx.FindKeyPair(nil, []byte(c.env(envKey)))
	if err == nil && key == nil {
		err = errNotFound("key")
	}
	if err != nil {
		ctx.Close()
		return nil, nil, err
	}
	return ctx, key, nil
}

// openMPHSM opens the same key through signer/p11, and so through hsm.
func (c *child) openMPHSM() (*p11.TokenSigner, error) {
	return p11.Open(p11.Config{
		Module: c.env(envModule),
		Token:  hsm.TokenSelector{Label: c.env(envToken)},
		Key:    hsm.KeySelector{Label: c.env(envKey)},
		PIN:    hsm.StaticPIN([]byte(c.env(envPIN))),
	})
}

// mphsmClosesFirst: crypto11 loads the module, mp-hsm shares it, both
// sign; mp-hsm closes (hsm Module.Close) and crypto11 still signs; mp-hsm
// opens and closes again beside it; crypto11 closes last.
func mphsmClosesFirst(c *child) error {
	ctx, key, err := c.openCrypto11()
	if c.step("crypto11 configure", err) != nil {
		return err
	}
	s, err := c.openMPHSM()
	if c.step("mp-hsm open", err) != nil {
		ctx.Close()
		return err
	}
	c.step("crypto11 sign", signAndVerify(key, "1"))
	c.step("mp-hsm sign", signAndVerify(s, "2"))
	c.step("mp-hsm close", s.Close())
	c.step("crypto11 sign", signAndVerify(key, "3"))
	s, err = c.openMPHSM()
	if c.step("mp-hsm open again", err) == nil {
		c.step("mp-hsm sign", signAndVerify(s, "4"))
		c.step("mp-hsm close", s.Close())
	}
	c.step("crypto11 sign", signAndVerify(key, "5"))
	return c.step("crypto11 close", ctx.Close())
}

// crypto11ClosesFirst: as mphsmClosesFirst, but crypto11's only Context
// closes while mp-hsm still uses the module.
func crypto11ClosesFirst(c *child) error {
	ctx, key, err := c.openCrypto11()
	if c.step("crypto11 configure", err) != nil {
		return err
	}
	s, err := c.openMPHSM()
	if c.step("mp-hsm open", err) != nil {
		ctx.Close()
		return err
	}
	c.step("crypto11 sign", signAndVerify(key, "1"))
	c.step("mp-hsm sign", signAndVerify(s, "2"))
	c.step("crypto11 close", ctx.Close())
	err = signAndVerify(s, "3")
	c.step("mp-hsm sign", err)
	if err != nil && !strings.Contains(err.Error(), "other code in this process finalised the module") {
		c.step("the error names the cause", err)
	}
	again, err := c.openMPHSM()
	if c.step("mp-hsm open again", err) == nil {
		c.step("mp-hsm sign with the new signer", signAndVerify(again, "4"))
		c.step("mp-hsm close the new signer", again.Close())
	}
	return c.step("mp-hsm close the first signer", s.Close())
}

// mphsmOpensFirst: mp-hsm loads the module first; crypto11 cannot join;
// once mp-hsm has closed, crypto11 can.
func mphsmOpensFirst(c *child) error {
	s, err := c.openMPHSM()
	if c.step("mp-hsm open", err) != nil {
		return err
	}
	_, _, err = c.openCrypto11()
	c.step("crypto11 configure", err)
	c.step("mp-hsm sign", signAndVerify(s, "1"))
	c.step("mp-hsm close", s.Close())
	ctx, key, err := c.openCrypto11()
	if c.step("crypto11 configure after mp-hsm closed", err) != nil {
		return err
	}
	c.step("crypto11 sign", signAndVerify(key, "2"))
	return c.step("crypto11 close", ctx.Close())
}

// crypto11Reconfigures: crypto11 finalises the module under mp-hsm's
// signer and initialises it again; the signer's handles are stale, and
// crypto11 must still sign after the signer closed.
func crypto11Reconfigures(c *child) error {
	ctx, _, err := c.openCrypto11()
	if c.step("crypto11 configure", err) != nil {
		return err
	}
	s, err := c.openMPHSM()
	if c.step("mp-hsm open", err) != nil {
		ctx.Close()
		return err
	}
	c.step("mp-hsm sign", signAndVerify(s, "1"))
	c.step("crypto11 close", ctx.Close())
	ctx, key, err := c.openCrypto11()
	if c.step("crypto11 configure again", err) != nil {
		return err
	}
	c.step("crypto11 sign", signAndVerify(key, "2"))
	c.step("mp-hsm sign", signAndVerify(s, "3"))
	c.step("mp-hsm close", s.Close())
	c.step("crypto11 sign", signAndVerify(key, "4"))
	return c.step("crypto11 close", ctx.Close())
}

// lifecycle returns the C_Initialize, C_Login and C_Finalize calls in the
// spy's log, in order, each with what the module returned.
func lifecycle(calls []p11spy.Call) []string {
	return lifecycleOf(calls, map[string]bool{"C_Initialize": true, "C_Login": true, "C_Finalize": true})
}

// lifecycleOf returns the calls named in names (all when names is nil),
// in order, each as "C_Name RETURN_VALUE".
func lifecycleOf(calls []p11spy.Call, names map[string]bool) []string {
	var out []string
	for _, call := range calls {
		if names != nil && !names[call.Name] {
			continue
		}
		ret := "?"
		for _, line := range strings.Split(call.Text, "\n") {
			if strings.HasPrefix(line, "Returned:") {
				f := strings.Fields(line)
				ret = f[len(f)-1]
			}
		}
		out = append(out, call.Name+" "+ret)
	}
	return out
}

// The lines of lifecycle.
const (
	initOK      = "C_Initialize CKR_OK"
	initAlready = "C_Initialize CKR_CRYPTOKI_ALREADY_INITIALIZED"
	loginOK     = "C_Login CKR_OK"
	loginShared = "C_Login CKR_USER_ALREADY_LOGGED_IN" // the process is logged in already: no PIN spent
	finalize    = "C_Finalize CKR_OK"
)

func TestSharedModule(t *testing.T) {
	t.Parallel()
	_, tok := token(t)
	spy := p11spy.Path(t)
	for _, tc := range []struct {
		scenario string
		want     []string
		calls    []string // C_Initialize, C_Login and C_Finalize, in order (lifecycle); C_Finalize is the last call
	}{{
		scenario: "mp-hsm closes first",
		want: []string{
			"crypto11 configure: ok",
			"mp-hsm open: ok",
			"crypto11 sign: ok",
			"mp-hsm sign: ok",
			"mp-hsm close: ok",
			"crypto11 sign: ok",
			"mp-hsm open again: ok",
			"mp-hsm sign: ok",
			"mp-hsm close: ok",
			"crypto11 sign: ok",
			"crypto11 close: ok",
		},
		// crypto11 initialises and logs in; hsm is told both are done
		// (twice: it opens twice) and never finalises; crypto11's Close
		// finalises, last.
		calls: []string{initOK, loginOK, initAlready, loginShared, initAlready, loginShared, finalize},
	}, {
		scenario: "crypto11 closes first",
		want: []string{
			"crypto11 configure: ok",
			"mp-hsm open: ok",
			"crypto11 sign: ok",
			"mp-hsm sign: ok",
			"crypto11 close: ok",
			// crypto11 v1.6.2 finalises the module when its last
			// Context closes, whoever else uses it.
			"mp-hsm sign: ErrClosed CKR_CRYPTOKI_NOT_INITIALIZED",
			// hsm initialises it again, although the first signer
			// still holds the old load of it.
			"mp-hsm open again: ok",
			"mp-hsm sign with the new signer: ok",
			"mp-hsm close the new signer: ok",
			"mp-hsm close the first signer: ok",
		},
		// After crypto11's C_Finalize, hsm's second Open initialises the
		// module and logs in; the last Close of hsm finalises it.
		calls: []string{initOK, loginOK, initAlready, loginShared, finalize, initOK, loginOK, finalize},
	}, {
		scenario: "mp-hsm opens first",
		want: []string{
			"mp-hsm open: ok",
			// crypto11 v1.6.2 refuses a module initialised before it.
			"crypto11 configure: CKR_CRYPTOKI_ALREADY_INITIALIZED",
			"mp-hsm sign: ok",
			"mp-hsm close: ok",
			"crypto11 configure after mp-hsm closed: ok",
			"crypto11 sign: ok",
			"crypto11 close: ok",
		},
		calls: []string{initOK, loginOK, initAlready, finalize, initOK, loginOK, finalize},
	}, {
		scenario: "crypto11 reconfigures",
		want: []string{
			"crypto11 configure: ok",
			"mp-hsm open: ok",
			"mp-hsm sign: ok",
			"crypto11 close: ok",
			"crypto11 configure again: ok",
			"crypto11 sign: ok",
			// The first load's handles are stale in the module crypto11
			// initialised again: SoftHSM2 does not reuse them.
			"mp-hsm sign: ErrSessionClosed CKR_SESSION_HANDLE_INVALID",
			"mp-hsm close: ok",
			"crypto11 sign: ok",
			"crypto11 close: ok",
		},
		calls: []string{initOK, loginOK, initAlready, loginShared, finalize, initOK, loginOK, finalize},
	}} {
		t.Run(strings.ReplaceAll(tc.scenario, " ", "_"), func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "spy.log")
			kv := append(p11spy.Env(tok.Module, log),
				envModule+"="+spy, envToken+"="+tok.Label, envPIN+"="+tok.PIN, envKey+"=Authentication")
			defer func() {
				if t.Failed() { // what the module answered, without arguments (C_Login's holds the PIN)
					var b strings.Builder
					for _, line := range lifecycleOf(p11spy.Read(t, log), nil) {
						b.WriteString("\n" + line)
					}
					t.Log("the calls the spy saw:", b.String())
				}
			}()
			checkTranscript(t, runScenario(t, tc.scenario, kv...), tc.want)
			calls := p11spy.Read(t, log)
			if got := lifecycle(calls); fmt.Sprint(got) != fmt.Sprint(tc.calls) {
				t.Errorf("C_Initialize, C_Login and C_Finalize:\n%q\nwant\n%q", got, tc.calls)
			}
			if n := len(calls); n == 0 || calls[n-1].Name != "C_Finalize" {
				t.Errorf("the last call was not C_Finalize: %s", p11spy.Format(p11spy.Counts(calls)))
			}
		})
	}
}
