package packaging

import (
	"debug/elf"
	"fmt"
	"strconv"
	"strings"
)

// glibcLibraries are the shared libraries Debian's libc6 package holds.
var glibcLibraries = map[string]bool{
	"libc.so.6": true, "libm.so.6": true, "libdl.so.2": true, "libpthread.so.0": true,
	"librt.so.1": true, "libresolv.so.2": true,
	"ld-linux-x86-64.so.2": true, "ld-linux-aarch64.so.1": true,
}

// LibcDepends reads the ELF binary at path, of any architecture, and
// returns its dependency on the C library as a Debian relation, such as
// "libc6 (>= 2.34)": the newest GLIBC_ symbol version it imports, as
// dpkg-shlibdeps would compute from libc6's symbols file. It fails when the
// binary needs a shared library that is not glibc's, for which the package
// would need another dependency.
func LibcDepends(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("libc dependency: %w", err)
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		return "", fmt.Errorf("libc dependency of %s: %w", path, err)
	}
	for _, l := range libs {
		if !glibcLibraries[l] {
			return "", fmt.Errorf("libc dependency of %s: it needs %s, which is not glibc's: add a dependency on its package", path, l)
		}
	}
	syms, err := f.ImportedSymbols()
	if err != nil {
		return "", fmt.Errorf("libc dependency of %s: %w", path, err)
	}
	var newest []int
	for _, s := range syms {
		v, ok := strings.CutPrefix(s.Version, "GLIBC_")
		if !ok {
			continue
		}
		if n, err := versionNumbers(v); err == nil && compareNumbers(n, newest) > 0 {
			newest = n
		}
	}
	if newest == nil {
		return "", fmt.Errorf("libc dependency of %s: it imports no versioned glibc symbol (not a cgo binary?)", path)
	}
	parts := make([]string, len(newest))
	for i, n := range newest {
		parts[i] = strconv.Itoa(n)
	}
	return "libc6 (>= " + strings.Join(parts, ".") + ")", nil
}

func versionNumbers(v string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(v, ".") {
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// compareNumbers compares dotted versions as lists of numbers: 2.34 > 2.3.4.
func compareNumbers(a, b []int) int {
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			if x > y {
				return 1
			}
			return -1
		}
	}
	return 0
}
