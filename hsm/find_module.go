package hsm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

const maxModuleConfig = 64 << 10 // a p11-kit module config is a few lines

// Multiarch is Debian's multiarch triplet for the architecture this
// program was built for ("x86_64-linux-gnu" on amd64), the directory under
// /usr/lib where Debian installs PKCS#11 modules; "" where there is none.
func Multiarch() string {
	if runtime.GOOS != "linux" {
		return ""
	}
	return map[string]string{
		"amd64":    "x86_64-linux-gnu",
		"386":      "i386-linux-gnu",
		"arm64":    "aarch64-linux-gnu",
		"arm":      "arm-linux-gnueabihf",
		"ppc64le":  "powerpc64le-linux-gnu",
		"ppc64":    "powerpc64-linux-gnu",
		"s390x":    "s390x-linux-gnu",
		"riscv64":  "riscv64-linux-gnu",
		"mips64le": "mips64el-linux-gnuabi64",
		"mipsle":   "mipsel-linux-gnu",
		"loong64":  "loongarch64-linux-gnu",
	}[runtime.GOARCH]
}

// DefaultModulePaths returns the modules tried, in order, when no module is
// given: the p11-kit proxy, OpenSC and SoftHSM2 at their Debian paths for
// the architecture this program was built for.
func DefaultModulePaths() []string {
	lib := "/usr/lib/" + Multiarch()
	return []string{lib + "/p11-kit-proxy.so", lib + "/opensc-pkcs11.so", "/usr/lib/softhsm/libsofthsm2.so"}
}

// FindDefaultModule returns the first of DefaultModulePaths that exists.
func FindDefaultModule() (string, error) { return firstModule(DefaultModulePaths()) }

func firstModule(paths []string) (string, error) {
	for _, p := range paths {
		if isFile(p) {
			return p, nil
		}
	}
	return "", &Error{Op: "find module", Kind: tokenerr.ErrModuleNotFound,
		Detail: "none of " + strings.Join(paths, ", ") + " exists; install opensc (smart cards) or give the module path"}
}

// ModuleFromURI returns the module the URI u names: module-path, or the
// file of the module module-name names ("opensc-pkcs11"); "" when it names
// none. A module-name is looked for where p11-kit looks: first a NAME.module
// config in ~/.config/pkcs11/modules, /etc/pkcs11/modules or
// /usr/share/p11-kit/modules (its "module:" path, if relative, in p11-kit's
// module directory), then NAME.so in the pkcs11 and library directories under
// /usr/lib/<Multiarch()>, /usr/lib64, /usr/lib and /usr/local/lib. A name
// with a path separator, or found nowhere, gives tokenerr.ErrModuleNotFound
// listing the places looked at. With both, module-name must name
// module-path's file (NAME.so, or found as it), else the error matches
// pkcs11uri.ErrInvalid.
func ModuleFromURI(u *pkcs11uri.URI) (string, error) {
	switch {
	case u.ModuleName == "":
		return u.ModulePath, nil
	case u.ModulePath == "":
		return systemModuleDirs().resolve(u.ModuleName)
	}
	base := filepath.Base(u.ModulePath)
	if base == u.ModuleName || base == u.ModuleName+".so" {
		return u.ModulePath, nil
	}
	named, err := systemModuleDirs().resolve(u.ModuleName)
	what := "names no module here"
	if err == nil {
		if sameFile(named, u.ModulePath) {
			return u.ModulePath, nil
		}
		what = "names " + named
	}
	return "", u.AttrError("module-name", fmt.Sprintf("module-name=%s %s, but module-path is %s; give one of them",
		u.ModuleName, what, u.ModulePath))
}

// moduleDirs are the places a module-name is looked for, in order.
type moduleDirs struct {
	configs   []string // p11-kit module config directories
	p11kitLib []string // where a relative "module:" path is looked for
	libs      []string // where NAME.so is looked for
}

func systemModuleDirs() moduleDirs {
	var d moduleDirs
	if home, err := os.UserConfigDir(); err == nil {
		d.configs = append(d.configs, filepath.Join(home, "pkcs11", "modules"))
	}
	d.configs = append(d.configs, "/etc/pkcs11/modules", "/usr/share/p11-kit/modules")
	if t := Multiarch(); t != "" {
		d.p11kitLib = append(d.p11kitLib, "/usr/lib/"+t+"/pkcs11")
		d.libs = append(d.libs, "/usr/lib/"+t+"/pkcs11", "/usr/lib/"+t)
	}
	d.p11kitLib = append(d.p11kitLib, "/usr/lib64/pkcs11", "/usr/lib/pkcs11")
	d.libs = append(d.libs, "/usr/lib64/pkcs11", "/usr/lib/pkcs11", "/usr/local/lib/pkcs11", "/usr/lib64", "/usr/lib")
	return d
}

func (d moduleDirs) resolve(name string) (string, error) {
	fail := func(detail string) (string, error) {
		return "", &Error{Op: "resolve module-name", Kind: tokenerr.ErrModuleNotFound, Detail: detail}
	}
	if name == "" {
		return fail("no module name given")
	}
	if strings.ContainsRune(name, '/') || strings.ContainsRune(name, filepath.Separator) || name == "." || name == ".." {
		return fail(fmt.Sprintf("module-name %q is a path, not a name such as opensc-pkcs11; give a path as module-path", name))
	}
	for _, dir := range d.configs {
		p, err := d.fromConfig(filepath.Join(dir, name+".module"))
		if err == nil {
			return p, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fail(err.Error())
		}
	}
	file := name
	if !strings.HasSuffix(file, ".so") {
		file += ".so"
	}
	for _, dir := range d.libs {
		if p := filepath.Join(dir, file); isFile(p) {
			return p, nil
		}
	}
	return fail(fmt.Sprintf("no module named %q: no %s.module in %s, and no %s in %s; install the module, or give its path as module-path",
		name, name, strings.Join(d.configs, ", "), file, strings.Join(d.libs, ", ")))
}

// fromConfig reads a p11-kit module config's "module:" line; a missing
// config gives fs.ErrNotExist.
func (d moduleDirs) fromConfig(conf string) (string, error) {
	data, err := safefile.Read(conf, maxModuleConfig)
	if err != nil {
		return "", err
	}
	module := ""
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if key, val, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") && strings.TrimSpace(key) == "module" {
			module = strings.TrimSpace(val)
		}
	}
	switch {
	case module == "":
		return "", fmt.Errorf("p11-kit config %s has no \"module:\" line", conf)
	case filepath.IsAbs(module):
		if !isFile(module) {
			return "", fmt.Errorf("p11-kit config %s names module %s, which does not exist", conf, module)
		}
		return module, nil
	}
	for _, dir := range d.p11kitLib {
		if p := filepath.Join(dir, module); isFile(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("p11-kit config %s names module %s, which is in none of %s",
		conf, module, strings.Join(d.p11kitLib, ", "))
}

// isFile reports whether p is a regular file (or a link to one).
func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}
