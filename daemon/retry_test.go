package daemon_test

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// blipSigner fails its second signature with a device error (its first
// is the daemon's test signature), as an HSM whose link drops once does.
type blipSigner struct {
	signer.Signer
	signs atomic.Int64
}

func (b *blipSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if b.signs.Add(1) == 2 {
		return nil, fmt.Errorf("C_Sign: %w", tokenerr.ErrDevice)
	}
	return b.Signer.Sign(rand, digest, opts)
}

func (b *blipSigner) Close() error {
	if c, ok := b.Signer.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// TestFaultDuringExchangeRetried: a request whose signature meets a device
// fault waits for the reconnect and is made once more: the caller gets a
// token, not a 503, and Maskinporten saw one grant (the failed one was
// never sent).
func TestFaultDuringExchangeRetried(t *testing.T) {
	t.Parallel()
	inner := sharedOpener(t)
	var opens atomic.Int64
	f := newFixture(t, options{modify: func(c *daemon.Config) {
		c.OpenSigner = func(ctx context.Context) (signer.Signer, error) {
			s, err := inner(ctx)
			if err != nil {
				return nil, err
			}
			if opens.Add(1) == 1 {
				return &blipSigner{Signer: s}, nil
			}
			return s, nil
		}
		c.ProbeInterval = -1
		c.PresencePoll = 20 * time.Millisecond
	}})
	wantToken(t, f.post(scopeForm("test:read")))
	if n := opens.Load(); n != 2 {
		t.Errorf("%d opens, want 2: the first, and one reconnect after the fault", n)
	}
	if n := f.metric(`mphsm_token_faults_total`); n != 1 {
		t.Errorf("%v faults counted, want 1", n)
	}
	if n := f.emu.Stats().TokenRequests; n != 1 {
		t.Errorf("Maskinporten got %d token requests, want 1", n)
	}
}

// refusedThenFaultSigner refuses its second signature as a key with
// CKA_ALWAYS_AUTHENTICATE whose context login was refused does, then fails
// the next with a device error. Its Token remembers the refusal, but a new
// one (after a reconnect) would present the PIN again.
type refusedThenFaultSigner struct {
	signer.Signer
	signs atomic.Int64
}

func (r *refusedThenFaultSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	switch r.signs.Add(1) {
	case 2:
		return nil, fmt.Errorf("context login: %w", tokenerr.ErrPINIncorrect)
	case 3:
		return nil, fmt.Errorf("C_Sign: %w", tokenerr.ErrDevice)
	}
	return r.Signer.Sign(rand, digest, opts)
}

func (r *refusedThenFaultSigner) Close() error {
	if c, ok := r.Signer.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// TestPINRefusedWhileSigningStopsSigning: a signature refused for its PIN
// (a context login) makes the daemon not ready, as a login refused at
// start does: no later request signs, so no later fault reconnects and
// presents the PIN again on a fresh token. Before, the daemon stayed
// ready, the next request met a device fault, reconnected (a second
// OpenSigner, a login) and signed once more: the PIN was presented again.
func TestPINRefusedWhileSigningStopsSigning(t *testing.T) {
	t.Parallel()
	inner := sharedOpener(t)
	var opens atomic.Int64
	var first *refusedThenFaultSigner
	f := newFixture(t, options{modify: func(c *daemon.Config) {
		c.OpenSigner = func(ctx context.Context) (signer.Signer, error) {
			s, err := inner(ctx)
			if err != nil {
				return nil, err
			}
			if opens.Add(1) == 1 {
				first = &refusedThenFaultSigner{Signer: s}
				return first, nil
			}
			return s, nil
		}
		c.ProbeInterval = -1
		c.PresencePoll = 20 * time.Millisecond
	}})
	wantError(t, f.post(scopeForm("test:read")), 503, "temporarily_unavailable")
	if ok, reason := f.srv.Ready(); ok || !strings.Contains(reason, "not retried") {
		t.Errorf("Ready() = %v, %q after a signature refused for its PIN; want not ready, login refused", ok, reason)
	}
	a := f.post(scopeForm("test:write"))
	if a.Status != 503 {
		t.Errorf("the second request: %s, want 503", describe(a))
	}
	if n := opens.Load(); n != 1 {
		t.Errorf("%d opens, want 1: no reconnect (and login) after the PIN was refused", n)
	}
	if n := first.signs.Load(); n != 2 {
		t.Errorf("%d signatures, want 2 (the test signature and the refused one)", n)
	}
}
