package p11

import (
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
)

// OpenURI opens the signer that uri, an RFC 7512 pkcs11: URI, describes
// (see ConfigFromURI):
//
//	s, err := p11.OpenURI("pkcs11:token=Buypass%20ID;object=Authentication" +
//		"?module-name=opensc-pkcs11&pin-source=file:/run/secrets/pin")
//
// Close it when done. Errors in the URI match pkcs11uri.ErrInvalid.
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
// (hsm.SelectorsFromURI, which refuses vendor attributes and types that name
// no key); module-path or module-name the module (hsm.ModuleFromURI; with
// neither, Open takes a default); pin-source a file read at each login
// (hsm.PINFile, "file:" optional), pin-value the PIN itself (keep such a URI
// out of argv and logs). With no PIN, the PIN pad is used, or no login when
// the token needs none. Refusals match pkcs11uri.ErrInvalid; a module-name
// that names no module matches tokenerr.ErrModuleNotFound.
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
