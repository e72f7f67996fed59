package daemon

import (
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"time"

	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// meteredSigner measures signatures and reports card faults to the server.
type meteredSigner struct {
	s signer.Signer
	c *conn
	m *Server
}

var _ signer.Signer = (*meteredSigner)(nil)

func (ms *meteredSigner) Public() crypto.PublicKey   { return ms.s.Public() }
func (ms *meteredSigner) Chain() []*x509.Certificate { return ms.s.Chain() }

// Sign signs on the token, observes the latency and reports a card or HSM
// fault, which starts the reconnect loop.
func (ms *meteredSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	start := time.Now()
	sig, err := ms.s.Sign(rand, digest, opts)
	ms.m.metrics.signSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		ms.m.metrics.signErrors.Inc()
		if isDeviceFault(err) && !isPINError(err) {
			ms.m.fault(ms.c, err)
		}
	}
	return sig, err
}

// isDeviceFault reports errors that a new session, or the token coming
// back, may cure: the daemon reconnects. They are tokenerr's transient
// kinds (a removed card, a broken session, a device error, a lost login,
// and a stale key handle: the token was replaced or re-initialised under
// the daemon, as SoftHSM2 answers when its token directory disappears),
// and ErrClosed: the signer's token was closed under the daemon.
func isDeviceFault(err error) bool {
	return tokenerr.Transient(err) || errors.Is(err, tokenerr.ErrClosed)
}

// isPINError reports a login the token refused, or refused to try: it is
// never retried.
func isPINError(err error) bool { return tokenerr.IsPINRefused(err) }

// isTransientAtStart reports open errors with which New starts anyway, not
// ready, and waits for the token: no token in the reader, or a device fault.
func isTransientAtStart(err error) bool { return tokenerr.Transient(err) }
