// Command debtool prints the parts of the Debian package of mp-hsm that
// dpkg-deb does not make; scripts/deb.sh runs it.
//
//	debtool version DESCRIBE EPOCH   Debian version of `git describe` output, commit time EPOCH
//	debtool depends BINARY           the libc6 dependency of an ELF binary
//	debtool copyright BINARY GOROOT GOMODCACHE
//	                                 the DEP-5 copyright file of a Go binary
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/mp-hsm/mp-hsm/packaging"
)

func main() {
	out, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "debtool:", err)
		os.Exit(1)
	}
	fmt.Print(out)
}

func run(args []string) (string, error) {
	switch {
	case len(args) == 3 && args[0] == "version":
		epoch, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			return "", fmt.Errorf("version: commit time %q: %w", args[2], err)
		}
		v, err := packaging.DebianVersion(args[1], time.Unix(epoch, 0))
		return v + "\n", err
	case len(args) == 2 && args[0] == "depends":
		d, err := packaging.LibcDepends(args[1])
		return d + "\n", err
	case len(args) == 4 && args[0] == "copyright":
		return packaging.Copyright(args[1], args[2], args[3])
	}
	return "", fmt.Errorf("usage: debtool version DESCRIBE EPOCH | depends BINARY | copyright BINARY GOROOT GOMODCACHE")
}
