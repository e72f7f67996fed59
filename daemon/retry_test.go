package daemon_test

import (
	"context"
	"crypto"
	"fmt"
	"io"
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
