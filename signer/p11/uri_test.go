package p11_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// TestConfigFromURI: the URI's selectors, module and PIN source become
// the Config, pin-source read only when the token asks; what the URI
// cannot mean is refused with the error that says why.
func TestConfigFromURI(t *testing.T) {
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte("4321\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		uri, module, pin string
	}{
		{"pkcs11:token=T;id=%01?module-path=/m.so&pin-source=file:" + pinFile, "/m.so", "4321"},
		{"pkcs11:token=T;id=%01?pin-source=" + pinFile, "", "4321"},
		{"pkcs11:token=T;id=%01?pin-value=1234", "", "1234"},
		{"pkcs11:token=T;id=%01", "", ""},
	} {
		u, err := pkcs11uri.Parse(tc.uri)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := p11.ConfigFromURI(u)
		if err != nil {
			t.Fatalf("%s: %v", tc.uri, err)
		}
		if cfg.Token.Label != "T" || string(cfg.Key.ID) != "\x01" || cfg.Module != tc.module {
			t.Errorf("%s: token %q key %x module %q", tc.uri, cfg.Token.Label, cfg.Key.ID, cfg.Module)
		}
		var pin []byte
		if cfg.PIN != nil {
			if pin, err = cfg.PIN(); err != nil {
				t.Fatalf("%s: PIN: %v", tc.uri, err)
			}
		}
		if string(pin) != tc.pin {
			t.Errorf("%s: PIN %q, want %q", tc.uri, pin, tc.pin)
		}
	}
	for _, tc := range []struct {
		uri  string
		want error
	}{
		{"pkcs11:token=T;x-vendor=1", pkcs11uri.ErrInvalid},
		{"pkcs11:type=secret-key", pkcs11uri.ErrInvalid},
		{"pkcs11:token=T?module-name=no-such-module-here", tokenerr.ErrModuleNotFound},
	} {
		u, err := pkcs11uri.Parse(tc.uri)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p11.ConfigFromURI(u); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.uri, err, tc.want)
		}
	}
	if _, err := p11.OpenURI("pkcs11:token=T;tokn=x"); !errors.Is(err, pkcs11uri.ErrInvalid) {
		t.Errorf("OpenURI of a misspelt attribute: %v, want pkcs11uri.ErrInvalid", err)
	}
}
