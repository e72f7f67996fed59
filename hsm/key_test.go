//go:build cgo

package hsm_test

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"testing"

	"github.com/mp-hsm/mp-hsm/hsm"
)

// TestKeyInfoIsACopy: what Info returns can be changed without changing
// what the Key signs with.
func TestKeyInfoIsACopy(t *testing.T) {
	o := openAll(t, hsm.TokenOptions{})
	info := o.key.Info()
	info.Type = hsm.KeyTypeEC
	info.AlwaysAuthenticate = true
	info.ID[0] = 0xff
	info.Label = "changed"

	again := o.key.Info()
	if again.Type != hsm.KeyTypeRSA || again.AlwaysAuthenticate || !bytes.Equal(again.ID, []byte{1}) || again.Label != "k" {
		t.Fatalf("Info() after changing a copy = %v; want the key as found", again)
	}
	d := digest(crypto.SHA256, []byte("grant"))
	sig, err := o.key.Sign(nil, d, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(o.key.Public().(*rsa.PublicKey), crypto.SHA256, d, sig); err != nil {
		t.Fatalf("signature after changing a copy of the info: %v", err)
	}
}
