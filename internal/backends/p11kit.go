//go:build cgo

package backends

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mp-hsm/mp-hsm/hsm"
)

// p11kitModuleDirs are where p11-kit reads the system's module
// registrations, the package's directory first. (p11-kit also reads
// ~/.config/pkcs11/modules, but not in a program running as root.)
var p11kitModuleDirs = []string{"/usr/share/p11-kit/modules", "/etc/pkcs11/modules"}

// p11kitModule is one module registration file.
type p11kitModule struct {
	file, module string
	proxy        bool // the proxy loads it: not disabled in p11-kit-proxy
}

// p11kitModules reads the system's module registrations; a file in
// /etc/pkcs11/modules replaces the one of the same name in
// /usr/share/p11-kit/modules.
func p11kitModules() ([]p11kitModule, error) {
	byName := map[string]p11kitModule{}
	for _, dir := range p11kitModuleDirs {
		entries, err := os.ReadDir(dir)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".module") {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				return nil, err
			}
			m := p11kitModule{file: filepath.Join(dir, e.Name()), proxy: true}
			for line := range strings.Lines(string(data)) {
				k, v, ok := strings.Cut(line, ":")
				if !ok || strings.HasPrefix(strings.TrimSpace(k), "#") {
					continue
				}
				v = strings.TrimSpace(v)
				switch strings.TrimSpace(k) {
				case "module":
					m.module = v
				case "disable-in":
					if slices.Contains(strings.Fields(v), "p11-kit-proxy") {
						m.proxy = false
					}
				case "enable-in":
					if !slices.Contains(strings.Fields(v), "p11-kit-proxy") {
						m.proxy = false
					}
				}
			}
			if m.module != "" {
				byName[e.Name()] = m
			}
		}
	}
	var out []p11kitModule
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, byName[name])
	}
	return out, nil
}

// StartP11KitProxy starts SoftHSM2 reached through p11-kit's proxy module
// (p11-kit-proxy.so, mp-hsm's default module): a token in the process's
// SoftHSM2 store (see softToken), which the proxy finds because the
// softhsm2 package registers SoftHSM2 with p11-kit system-wide and
// SoftHSM2 honours SOFTHSM2_CONF. The proxy also loads every other module
// registered system-wide and not disabled for it (tpm2-pkcs11, OpenSC...):
// their tokens appear beside this one, and each reads its own settings
// from the environment, so the suite gives every process the union of all
// backends' Env. dir is not used.
func StartP11KitProxy(dir string) (*Running, error) {
	proxy := "/usr/lib/" + hsm.Multiarch() + "/p11-kit-proxy.so"
	if _, err := os.Stat(proxy); err != nil {
		return nil, fmt.Errorf("p11-kit-proxy: %w (apt-get install p11-kit-modules)", err)
	}
	mods, err := p11kitModules()
	if err != nil {
		return nil, fmt.Errorf("p11-kit-proxy: reading the module registrations: %w", err)
	}
	var others []string
	registered := false
	for _, m := range mods {
		switch {
		case !m.proxy:
		case strings.Contains(filepath.Base(m.module), "libsofthsm2"):
			registered = true
		default:
			others = append(others, filepath.Base(m.module))
		}
	}
	if !registered {
		return nil, fmt.Errorf("p11-kit-proxy: SoftHSM2 is not registered with p11-kit for the proxy: no module file in %s names libsofthsm2.so (the softhsm2 package installs /usr/share/p11-kit/modules/softhsm2.module)",
			strings.Join(p11kitModuleDirs, " or "))
	}
	tok, release, err := softToken("conf-p11-kit")
	if err != nil {
		return nil, fmt.Errorf("p11-kit-proxy: %w", err)
	}
	r, err := softRunning("p11-kit-proxy", proxy, tok, release, "p11-kit-modules", "softhsm2")
	if err != nil {
		return nil, fmt.Errorf("p11-kit-proxy: %w", err)
	}
	tpm := ""
	if slices.ContainsFunc(others, func(m string) bool { return strings.Contains(m, "tpm2_pkcs11") }) {
		tpm = " (tpm2-pkcs11 without its TCTI and store prints errors on stderr, which mp-hsm holds back unless no token matches, and creates ~/.tpm2_pkcs11)"
	}
	r.Notes = []string{
		"p11-kit's proxy loads every module registered system-wide (" + strings.Join(p11kitModuleDirs, ", ") + "): here also " +
			orNone(others) + ". Their tokens are listed beside yours, and each module needs its own settings in the environment" +
			tpm + ". Keep a module out of mp-hsm with a line \"disable-in: mp-hsm\" in its module file, or give --module the module itself.",
		"The proxy numbers slots itself: slot IDs through p11-kit differ from those the module reports alone. Choose tokens by label, serial or URI.",
		"p11-kit reads no user configuration (~/.config/pkcs11) in a program running as root.",
	}
	return r, nil
}

// orNone joins names, or says none.
func orNone(names []string) string {
	if len(names) == 0 {
		return "no other module"
	}
	return strings.Join(names, ", ")
}
