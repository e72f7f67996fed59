package hsm

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

func uintPtr(n uint) *uint { return &n }

// TestSelectorsFromURIUseEveryPathAttribute: each path attribute Parse accepts
// ends up in a selector.
func TestSelectorsFromURIUseEveryPathAttribute(t *testing.T) {
	u, err := pkcs11uri.Parse("pkcs11:token=T;manufacturer=M;model=Mo;serial=S;slot-description=SD;slot-manufacturer=SM;slot-id=3;" +
		"library-manufacturer=LM;library-description=LD;library-version=2.40;object=O;type=private;id=%AB")
	if err != nil {
		t.Fatal(err)
	}
	ts, ks, err := SelectorsFromURI(u)
	if err != nil {
		t.Fatal(err)
	}
	want := TokenSelector{SlotID: uintPtr(3), Label: "T", Serial: "S", Manufacturer: "M", Model: "Mo",
		SlotDescription: "SD", SlotManufacturer: "SM",
		LibraryManufacturer: "LM", LibraryDescription: "LD", LibraryVersion: "2.40"}
	if !reflect.DeepEqual(ts, want) {
		t.Errorf("TokenSelector = %+v\nwant %+v", ts, want)
	}
	if !reflect.DeepEqual(ks, KeySelector{ID: []byte{0xab}, Label: "O"}) {
		t.Errorf("KeySelector = %+v", ks)
	}
	for _, s := range []string{`slot-description "SD"`, `slot-manufacturer "SM"`, `library-manufacturer "LM"`,
		`library-description "LD"`, `library-version "2.40"`} {
		if !strings.Contains(ts.String(), s) {
			t.Errorf("TokenSelector.String() = %q, want it to say %s", ts.String(), s)
		}
	}
}

func TestSelectorsFromURIRefuse(t *testing.T) {
	for _, tc := range []struct {
		in, attr string
		offset   int
		reason   string
	}{
		{"pkcs11:token=t;x-foo=1", "x-foo", 15, "mp-hsm knows no vendor attribute, and x-foo would be ignored"},
		{"pkcs11:token=t?pin-source=file:/p&x-bar=2", "x-bar", 34, "x-bar would be ignored"},
		{"pkcs11:x-b=1;x-a=2", "x-a", 7, "x-a would be ignored"}, // String sorts vendor names
		{"pkcs11:token=t;type=secret-key", "type", 15, "type=secret-key cannot name a signing key"},
		{"pkcs11:type=data", "type", 7, "cannot name a signing key"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := pkcs11uri.Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = SelectorsFromURI(u)
			var ue *pkcs11uri.Error
			if !errors.Is(err, pkcs11uri.ErrInvalid) || !errors.As(err, &ue) {
				t.Fatalf("SelectorsFromURI = %v, want a *pkcs11uri.Error", err)
			}
			if ue.Attr != tc.attr || ue.Offset != tc.offset || !strings.Contains(ue.Reason, tc.reason) {
				t.Errorf("got Attr %q Offset %d Reason %q; want %q %d %q", ue.Attr, ue.Offset, ue.Reason, tc.attr, tc.offset, tc.reason)
			}
			if !strings.HasPrefix(ue.URI[ue.Offset:], tc.attr+"=") {
				t.Errorf("offset %d of %q is not at %s", ue.Offset, ue.URI, tc.attr)
			}
		})
	}
}

// fakeModules lays out p11-kit configs and modules under a temporary root.
func fakeModules(t *testing.T) (moduleDirs, string) {
	t.Helper()
	root := t.TempDir()
	d := moduleDirs{
		configs:   []string{filepath.Join(root, "etc"), filepath.Join(root, "share")},
		p11kitLib: []string{filepath.Join(root, "lib/pkcs11")},
		libs:      []string{filepath.Join(root, "lib/pkcs11"), filepath.Join(root, "lib")},
	}
	write := func(rel, text string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("lib/pkcs11/opensc-pkcs11.so", "")
	write("lib/plain.so", "")
	write("lib/pkcs11/pkcs11-spy.so", "")
	write("opt/hsm/libvendor.so", "")
	write("share/opensc-pkcs11.module", "# how to load opensc\nmodule: opensc-pkcs11.so\n")
	write("share/vendor.module", "module: "+filepath.Join(root, "opt/hsm/libvendor.so")+"\ncritical: yes\n")
	write("share/spy.module", "module: /nonexistent/spy.so\n")
	write("etc/spy.module", "# the admin's copy wins\nmodule: pkcs11-spy.so\n")
	write("share/broken.module", "critical: no\n")
	write("share/gone.module", "module: gone.so\n")
	return d, root
}

func TestResolveModuleName(t *testing.T) {
	d, root := fakeModules(t)
	for _, tc := range []struct {
		name, want string // want "" for tokenerr.ErrModuleNotFound
		reason     string // part of the error
	}{
		{"opensc-pkcs11", "lib/pkcs11/opensc-pkcs11.so", ""},
		{"vendor", "opt/hsm/libvendor.so", ""},
		{"spy", "lib/pkcs11/pkcs11-spy.so", ""},
		{"plain", "lib/plain.so", ""},
		{"plain.so", "lib/plain.so", ""},
		{"nothing", "", `no module named "nothing": no nothing.module in`},
		{"broken", "", `has no "module:" line`},
		{"gone", "", "names module gone.so, which is in none of"},
		{"../lib/plain", "", "is a path, not a name"},
		{"", "", "no module name given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := d.resolve(tc.name)
			if tc.want != "" {
				if want := filepath.Join(root, tc.want); err != nil || got != want {
					t.Fatalf("resolve(%q) = %q, %v; want %q", tc.name, got, err, want)
				}
				return
			}
			var he *Error
			if !errors.Is(err, tokenerr.ErrModuleNotFound) || !errors.As(err, &he) || !strings.Contains(he.Detail, tc.reason) {
				t.Fatalf("resolve(%q) = %q, %v; want tokenerr.ErrModuleNotFound saying %q", tc.name, got, err, tc.reason)
			}
		})
	}
}

func TestMultiarchDirsFollowTheArchitecture(t *testing.T) {
	d := systemModuleDirs()
	if trip := Multiarch(); trip != "" && (d.libs[0] != "/usr/lib/"+trip+"/pkcs11" || d.p11kitLib[0] != d.libs[0]) {
		t.Errorf("dirs %+v do not start with the %s multiarch directory", d, trip)
	}
}

// TestModuleFromURI: module-path is used as given, module-name resolved, and
// both together must agree.
func TestModuleFromURI(t *testing.T) {
	opensc, err := systemModuleDirs().resolve("opensc-pkcs11")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("OpenSC is not installed: %v", err)
	}
	for _, tc := range []struct {
		in, want string
		wantErr  error
	}{
		{"pkcs11:token=t", "", nil},
		{"pkcs11:?module-path=/x/y.so", "/x/y.so", nil},
		{"pkcs11:token=t?module-name=opensc-pkcs11", opensc, nil},
		{"pkcs11:?module-name=opensc-pkcs11&module-path=/elsewhere/opensc-pkcs11.so", "/elsewhere/opensc-pkcs11.so", nil},
		{"pkcs11:?module-name=opensc-pkcs11&module-path=" + opensc, opensc, nil},
		{"pkcs11:?module-name=opensc-pkcs11&module-path=/usr/lib/softhsm/libsofthsm2.so", "", pkcs11uri.ErrInvalid},
		{"pkcs11:?module-name=no-such-module-here", "", tokenerr.ErrModuleNotFound},
		{"pkcs11:?module-name=no-such-module-here&module-path=/x/y.so", "", pkcs11uri.ErrInvalid},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := pkcs11uri.Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ModuleFromURI(u)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ModuleFromURI = %q, %v; want %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ModuleFromURI = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
