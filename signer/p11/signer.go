// Package p11 is the signer.Signer over a private key on a smart card or HSM,
// with the chain read from the same token, through package hsm: OpenURI opens
// one from a pkcs11: URI, Open from a Config. It is apart so that signer needs no cgo.
package p11

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/signer"
)

// TokenSigner is a signer.Signer over a token key. Open creates one that owns
// (and closes) the module and token; New one over a Key you manage. Safe for
// concurrent use.
type TokenSigner struct {
	key   *hsm.Key
	chain []*x509.Certificate
	mod   *hsm.Module // owned when Open created it; Close closes it
}

var _ signer.Signer = (*TokenSigner)(nil)

// Options configures New.
type Options struct {
	// ExtraChain holds issuer certificates (say from a PEM file) that
	// complete a chain the token lacks; they may also hold the leaf.
	ExtraChain []*x509.Certificate
}

// New wraps key (passing signer.CheckKey) with its chain, built by
// signer.BuildChain from the token's certificates and opts.ExtraChain. A key
// without a certificate gets an empty chain (grants then use a kid); a
// certificate with the key's CKA_ID but another public key gives
// signer.ErrCertificateMismatch.
func New(key *hsm.Key, opts Options) (*TokenSigner, error) {
	if key == nil {
		return nil, errors.New("p11: no key given")
	}
	pub := key.Public()
	if err := signer.CheckKey(pub); err != nil {
		return nil, fmt.Errorf("key %s: %w", key.String(), err)
	}
	certs, err := key.Token().Certificates()
	if err != nil {
		return nil, fmt.Errorf("reading the token's certificates: %w", err)
	}
	pool := make([]*x509.Certificate, 0, len(certs))
	var sameID *x509.Certificate
	id := key.Info().ID
	for _, c := range certs {
		pool = append(pool, c.Cert)
		if len(id) > 0 && bytes.Equal(c.ID, id) && sameID == nil {
			sameID = c.Cert
		}
	}
	chain, err := signer.BuildChain(pub, pool, opts.ExtraChain)
	if err != nil {
		return nil, fmt.Errorf("building the certificate chain: %w", err)
	}
	if len(chain) == 0 && sameID != nil { // not the leaf BuildChain looked for, so another key's
		return nil, fmt.Errorf("key %s: the certificate with the same CKA_ID belongs to another key: %w", key.String(), signer.MatchCertificate(pub, sameID))
	}
	return &TokenSigner{key: key, chain: chain}, nil
}

// Public returns the key's public half.
func (s *TokenSigner) Public() crypto.PublicKey { return s.key.Public() }

// Sign signs digest on the token (see hsm.Key.SignContext).
func (s *TokenSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.key.Sign(rand, digest, opts)
}

// SignContext signs like Sign, waiting for a token session no longer than ctx allows.
func (s *TokenSigner) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.key.SignContext(ctx, digest, opts)
}

// Chain returns the certificate chain, leaf first; empty when the token holds no certificate for the key.
func (s *TokenSigner) Chain() []*x509.Certificate { return s.chain }

// Key returns the token key.
func (s *TokenSigner) Key() *hsm.Key { return s.key }

// Probe reports whether the key's token is still there and logged in, without
// signing or a PIN (hsm.Token.Check): a removed card matches
// tokenerr.ErrTokenRemoved (or ErrSessionClosed, ErrNotLoggedIn, ErrDevice),
// a closed signer tokenerr.ErrClosed.
func (s *TokenSigner) Probe(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.key.Token().Check()
}

// Close closes the module and token when Open opened them; for a signer from New it does nothing. Idempotent.
func (s *TokenSigner) Close() error {
	if s.mod == nil {
		return nil
	}
	return s.mod.Close() // idempotent; closes the token too
}

// Config says where a token key is and how to log in. Its fields map one to
// one onto mp-hsm's command-line flags.
type Config struct {
	Module        string              // the PKCS#11 module path; empty: see ModulePath
	Token         hsm.TokenSelector   // the zero value chooses the only token present
	Key           hsm.KeySelector     // the zero value chooses the authentication key (hsm.Token.FindKey)
	PIN           hsm.PINSource       // nil: the reader's PIN pad, or no login when the token needs none
	Login         hsm.LoginOptions    // such as allowing a final PIN try
	Session       hsm.TokenOptions    // tunes the token's sessions
	ModuleOptions hsm.OpenOptions     // passed to hsm.OpenWith
	ExtraChain    []*x509.Certificate // completes the chain (see Options)
	Logger        *slog.Logger        // receives warnings (such as a low PIN count); nil discards
}

// ModulePath returns Module, or when it is empty the first of hsm.DefaultModulePaths that exists.
func (cfg Config) ModulePath() (string, error) {
	if cfg.Module != "" {
		return cfg.Module, nil
	}
	return hsm.FindDefaultModule()
}

// TokenOptions returns Session, with Logger when Session names none.
func (cfg Config) TokenOptions() hsm.TokenOptions {
	o := cfg.Session
	o.Logger = cmp.Or(o.Logger, cfg.Logger)
	return o
}

// Open loads the module, finds the token, logs in (one C_Login at most, see
// hsm.Token.Login), finds the key once, reads the chain and returns a signer
// that owns it all: Close it when done.
func Open(cfg Config) (*TokenSigner, error) {
	path, err := cfg.ModulePath()
	if err != nil {
		return nil, err
	}
	mod, err := hsm.OpenWith(path, cfg.ModuleOptions)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*TokenSigner, error) {
		mod.Close() // closes the token too
		return nil, err
	}
	slot, err := mod.FindSlot(cfg.Token)
	if err != nil {
		return fail(err)
	}
	tok, err := mod.OpenSlot(slot, cfg.TokenOptions())
	if err != nil {
		return fail(err)
	}
	if err := tok.Login(cfg.PIN, cfg.Login); err != nil {
		return fail(err)
	}
	key, err := tok.FindKey(cfg.Key)
	if err != nil {
		return fail(err)
	}
	s, err := New(key, Options{ExtraChain: cfg.ExtraChain})
	if err != nil {
		return fail(err)
	}
	s.mod = mod
	return s, nil
}

// OpenURI opens the signer that uri, an RFC 7512 pkcs11: URI such as
// "pkcs11:token=Buypass%20ID;object=Authentication?pin-source=file:/run/pin",
// describes (see ConfigFromURI); Close it when done. Errors in the URI match
// pkcs11uri.ErrInvalid.
func OpenURI(uri string) (*TokenSigner, error) {
	u, err := pkcs11uri.Parse(uri)
	if err != nil {
		return nil, err
	}
	cfg, err := ConfigFromURI(u)
	if err != nil {
		return nil, err
	}
	return Open(cfg)
}

// ConfigFromURI returns the Config that u describes, loading nothing and
// reading no PIN: the path attributes choose the token and key
// (hsm.SelectorsFromURI), module-path or module-name the module
// (hsm.ModuleFromURI; neither: Open's default), pin-source a file read at
// each login (hsm.PINFile), pin-value the PIN itself (keep such a URI out of
// argv and logs); no PIN means the PIN pad, or no login when the token needs
// none. Refusals match pkcs11uri.ErrInvalid, a module-name that names no
// module tokenerr.ErrModuleNotFound.
func ConfigFromURI(u *pkcs11uri.URI) (Config, error) {
	var cfg Config
	var err error
	if cfg.Token, cfg.Key, err = hsm.SelectorsFromURI(u); err != nil {
		return Config{}, err
	}
	if cfg.Module, err = hsm.ModuleFromURI(u); err != nil {
		return Config{}, err
	}
	switch {
	case u.PINFile() != "":
		cfg.PIN = hsm.PINFile(u.PINFile())
	case u.HasPIN():
		cfg.PIN = hsm.StaticPIN([]byte(u.PINValue))
	}
	return cfg, nil
}
