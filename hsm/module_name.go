package hsm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// maxModuleConfig bounds a p11-kit module config: a few lines.
const maxModuleConfig = 64 << 10

// ResolveModuleName returns the file of the PKCS#11 module called name, as
// RFC 7512's module-name gives it ("opensc-pkcs11", "softhsm2"), looking
// where p11-kit does:
//
//  1. a p11-kit module config NAME.module in ~/.config/pkcs11/modules,
//     /etc/pkcs11/modules or /usr/share/p11-kit/modules (the first found
//     wins), whose "module:" line is the path, taken relative to p11-kit's
//     module directory (/usr/lib/<multiarch>/pkcs11 on Debian,
//     /usr/lib64/pkcs11 elsewhere) unless absolute;
//  2. NAME.so (or NAME, when it ends in .so) in /usr/lib/<multiarch>/pkcs11,
//     /usr/lib/<multiarch>, /usr/lib64/pkcs11, /usr/lib/pkcs11,
//     /usr/local/lib/pkcs11, /usr/lib64 and /usr/lib, in that order.
//
// <multiarch> is the Debian triplet of the running architecture, such as
// x86_64-linux-gnu or aarch64-linux-gnu. A name that holds a path separator
// is refused (give a path as module-path). When nothing is found, the error
// matches tokenerr.ErrModuleNotFound and lists the places looked at.
func ResolveModuleName(name string) (string, error) {
	return systemModuleDirs().resolve(name)
}

// moduleDirs are the places ResolveModuleName looks, in order.
type moduleDirs struct {
	configs   []string // p11-kit module config directories
	p11kitLib []string // where a relative "module:" path is looked for
	libs      []string // where NAME.so is looked for
}

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
	const op = "resolve module-name"
	if name == "" {
		return "", &Error{Op: op, Kind: tokenerr.ErrModuleNotFound, Detail: "no module name given"}
	}
	if strings.ContainsRune(name, '/') || strings.ContainsRune(name, filepath.Separator) || name == "." || name == ".." {
		return "", &Error{Op: op, Kind: tokenerr.ErrModuleNotFound,
			Detail: fmt.Sprintf("module-name %q is a path, not a name such as opensc-pkcs11; give a path as module-path", name)}
	}
	for _, dir := range d.configs {
		conf := filepath.Join(dir, name+".module")
		p, err := d.fromConfig(conf)
		switch {
		case err == nil:
			return p, nil
		case !errors.Is(err, fs.ErrNotExist):
			return "", &Error{Op: op, Kind: tokenerr.ErrModuleNotFound, Detail: err.Error()}
		}
	}
	file := name
	if !strings.HasSuffix(file, ".so") {
		file += ".so"
	}
	for _, dir := range d.libs {
		p := filepath.Join(dir, file)
		if isFile(p) {
			return p, nil
		}
	}
	return "", &Error{Op: op, Kind: tokenerr.ErrModuleNotFound, Detail: fmt.Sprintf(
		"no module named %q: no %s.module in %s, and no %s in %s; install the module, or give its path as module-path",
		name, name, strings.Join(d.configs, ", "), file, strings.Join(d.libs, ", "))}
}

// fromConfig reads the "module:" line of a p11-kit module config. A
// missing config gives an error matching fs.ErrNotExist; a config without
// a module line, or naming a file that is not there, another error.
func (d moduleDirs) fromConfig(conf string) (string, error) {
	data, err := safefile.Read(conf, maxModuleConfig)
	if err != nil {
		return "", err
	}
	module := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if key, val, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") && strings.TrimSpace(key) == "module" {
			module = strings.TrimSpace(val)
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("p11-kit config %s: %w", conf, err)
	}
	if module == "" {
		return "", fmt.Errorf("p11-kit config %s has no \"module:\" line", conf)
	}
	if filepath.IsAbs(module) {
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

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
