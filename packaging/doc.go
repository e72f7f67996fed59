// Package packaging holds what the Debian package of mp-hsm needs beyond
// dpkg-deb: the package version from `git describe`, the libc6 dependency
// read from the binary, and the machine-readable copyright file of the
// binary and of the Go modules linked into it. scripts/deb.sh (make deb)
// runs them through packaging/cmd/debtool; the test in this directory
// builds both .deb files and checks what is in them.
package packaging
