//go:build cgo

package backends

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// This file's name sorts after opencryptoki_test.go on purpose: go test
// runs a package's tests in the order of its files, and opencryptoki's
// C_Initialize crashed (SIGSEGV in libitm's _ITM_beginTransaction, under
// its TPM STDLL's ST_Initialize) in a process that had loaded
// libsofthsm2.so before it.

// TestSoftHSMBackends starts the four backends on SoftHSM2, provisions
// one, stops and starts the RPC backend's server, and stops them: the
// shared store goes with the last. Starting the p11-kit and spy backends
// loads neither module.
func TestSoftHSMBackends(t *testing.T) {
	if _, err := softhsm.ModulePath(); errors.Is(err, softhsm.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skipf("%v (with CI set, this fails the test)", err)
	}
	PreloadModules() // for opencryptoki's tests after this one
	var rs []*Running
	for _, start := range []func(string) (*Running, error){StartSoftHSM, StartP11KitProxy, StartSpy, StartP11KitRPC} {
		r, err := start(shortTempDir(t))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	t.Cleanup(func() {
		for _, r := range rs {
			r.Stop()
		}
	})
	conf := rs[0].Getenv("SOFTHSM2_CONF")
	labels := map[string]bool{}
	for _, r := range rs {
		if r.Getenv("SOFTHSM2_CONF") != conf || conf == "" {
			t.Errorf("%s: SOFTHSM2_CONF=%q, want the shared store's %q", r.Name, r.Getenv("SOFTHSM2_CONF"), conf)
		}
		if !strings.Contains(r.Version, "softhsm2 ") || r.Serial == "" || r.PIN == "" || labels[r.Label] {
			t.Errorf("%s: version %q, label %q, serial %q: want a softhsm2 version, a serial, a PIN and a label of its own", r.Name, r.Version, r.Label, r.Serial)
		}
		labels[r.Label] = true
		if len(r.Notes) == 0 {
			t.Errorf("%s has no notes for its users", r.Name)
		}
	}
	if spy := rs[2]; spy.Getenv("PKCS11SPY") != rs[0].Module || !strings.HasSuffix(spy.Getenv("PKCS11SPY_OUTPUT"), "pkcs11-spy.log") {
		t.Errorf("pkcs11-spy Env %q: want PKCS11SPY=%s and a log in its directory", spy.Env, rs[0].Module)
	}

	// On SoftHSM2 itself: p11-kit's proxy, loaded here, would also load
	// tpm2-pkcs11 into the process of the TPM tests (the conformance
	// suite provisions through the proxy).
	r := rs[0]
	pub, err := r.GenerateKey(KeySpec{Label: "k1", ID: []byte{1}, Kind: "rsa2048", AlwaysAuthenticate: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pub.(*rsa.PublicKey); !ok || pub.(*rsa.PublicKey).N.BitLen() != 2048 {
		t.Fatalf("rsa2048 gave %T", pub)
	}
	ecPub, err := r.GenerateKey(KeySpec{Label: "k2", ID: []byte{2}, Kind: "ec-p256"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ecPub.(*ecdsa.PublicKey); !ok {
		t.Fatalf("ec-p256 gave %T", ecPub)
	}
	f, err := r.PrivateKeyFlags([]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	if want := (PrivateKeyFlags{Sensitive: true, AlwaysSensitive: true, NeverExtractable: true, AlwaysAuthenticate: true}); f != want {
		t.Errorf("private key flags %+v, want %+v", f, want)
	}
	if _, err := r.PrivateKeyFlags([]byte{9}); err == nil || !strings.Contains(err.Error(), "0 private keys") {
		t.Errorf("flags of a key that does not exist: %v", err)
	}
	if _, err := r.GenerateKey(KeySpec{Label: "k3", ID: []byte{3}, Kind: "rsa4096"}); err == nil || !strings.Contains(err.Error(), `"rsa4096"`) {
		t.Errorf("kind rsa4096: %v, want an error naming it", err)
	}
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueLeaf(pub, softhsm.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PutCertificate(leaf, []byte{1}, "k1"); err != nil {
		t.Fatal(err)
	}
	if err := r.PutCertificate(nil, nil, ""); err == nil {
		t.Error("PutCertificate(nil) did not fail")
	}
	for mech, want := range map[uint]bool{pkcs11.CKM_RSA_PKCS: true, pkcs11.CKM_ECDSA: true, pkcs11.CKM_VENDOR_DEFINED | 0x7ff1: false} {
		if has, err := r.HasMechanism(mech); err != nil || has != want {
			t.Errorf("HasMechanism(%#x) = %v, %v; want %v", mech, has, err, want)
		}
	}

	checkRPC(t, rs[3])

	dir := filepath.Dir(conf)
	for i, r := range rs {
		if err := r.Stop(); err != nil {
			t.Errorf("stop %s: %v", r.Name, err)
		}
		_, err := os.Stat(dir)
		if last := i == len(rs)-1; last != os.IsNotExist(err) {
			t.Errorf("after stopping %s: store %s: %v (removed only after the last)", r.Name, dir, err)
		}
	}
	if _, err := StartSoftHSM(t.TempDir()); err == nil || !strings.Contains(err.Error(), "once per process") {
		t.Errorf("a start after the store was removed: %v, want an error saying why", err)
	}
}

// TestP11KitModules reads module registrations as p11-kit does for its
// proxy: a file in /etc/pkcs11/modules replaces the package's, and
// disable-in/enable-in decide whether the proxy loads a module.
func TestP11KitModules(t *testing.T) {
	usr, etc := t.TempDir(), t.TempDir()
	saved := p11kitModuleDirs
	p11kitModuleDirs = []string{usr, etc, filepath.Join(t.TempDir(), "missing")}
	t.Cleanup(func() { p11kitModuleDirs = saved })
	write := func(dir, name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(usr, "a.module", "module: liba.so\n")
	write(usr, "b.module", "# comment: x\nmodule: libb.so\ndisable-in: p11-kit-proxy gnome\n")
	write(usr, "c.module", "module: libc.so\nenable-in: firefox\n")
	write(usr, "d.module", "module: libd.so\n")
	write(etc, "d.module", "module: libd.so\ndisable-in: p11-kit-proxy\n")
	write(usr, "e.txt", "module: libe.so\n")
	write(usr, "f.module", "critical: no\n")
	mods, err := p11kitModules()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range mods {
		s := m.module
		if m.proxy {
			s += "+proxy"
		}
		got = append(got, s)
	}
	if want := "liba.so+proxy libb.so libc.so libd.so"; strings.Join(got, " ") != want {
		t.Errorf("modules %q, want %q", strings.Join(got, " "), want)
	}
}

// checkRPC reaches r's token through p11-kit-client.so with package hsm,
// stops the server (every call then fails with CKR_DEVICE_ERROR, ErrDevice
// in hsm), starts it again (a module opened afresh finds the token), and
// slows the link.
func checkRPC(t *testing.T, r *Running) {
	t.Helper()
	if r.RPC == nil || !strings.HasPrefix(r.Getenv("P11_KIT_SERVER_ADDRESS"), "unix:path=") {
		t.Fatalf("p11-kit-rpc: RPC %v, Env %q", r.RPC, r.Env)
	}
	t.Setenv("P11_KIT_SERVER_ADDRESS", r.Getenv("P11_KIT_SERVER_ADDRESS"))
	find := func() (*hsm.Module, error) {
		m, err := hsm.Open(r.Module)
		if err != nil {
			return nil, err
		}
		if _, err := m.FindSlot(hsm.TokenSelector{Label: r.Label, Serial: r.Serial}); err != nil {
			m.Close()
			return nil, err
		}
		return m, nil
	}
	m, err := find()
	if err != nil {
		t.Fatalf("the token through p11-kit's RPC: %v", err)
	}
	if err := r.RPC.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Slots(); !errors.Is(err, tokenerr.ErrDevice) || !errors.Is(err, pkcs11.Error(pkcs11.CKR_DEVICE_ERROR)) {
		t.Errorf("slots with the server stopped: %v, want ErrDevice (CKR_DEVICE_ERROR)", err)
	}
	m.Close()
	if err := r.RPC.Start(); err != nil {
		t.Fatal(err)
	}
	r.RPC.SetDelay(100 * time.Millisecond)
	start := time.Now()
	m, err = find()
	if err != nil {
		t.Fatalf("the token after the server's restart: %v", err)
	}
	// C_Initialize, C_GetSlotList twice, C_GetTokenInfo: four messages
	// at least, each held 100 ms.
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("finding the token over a link slowed by 100 ms a message took %v, want 400 ms or more", d)
	}
	r.RPC.SetDelay(0)
	m.Close()
}
