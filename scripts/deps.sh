#!/usr/bin/env bash
# Installs the system packages that mp-hsm's tests, demo and benchmarks use,
# and nothing else: each line of NEEDS below names a file or command, the
# Debian package that provides it and what uses it. Run by make test, make
# demo and make bench; `deps.sh deb` (make deb) adds the lines of DEB_NEEDS:
# the arm64 cross compiler and lintian, which make test does not use. As root on a Debian-like system it installs what is
# missing (without recommended packages) and says what; otherwise it says the
# one command to run and fails.
set -euo pipefail

arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)

# path-or-command | Debian package | what uses it
NEEDS=(
  "gcc|gcc|cgo: the hsm package and everything that links it"
  "/usr/lib/softhsm/libsofthsm2.so|softhsm2|the PKCS#11 token of every test and of make demo"
  "softhsm2-util|softhsm2|softhsm tests: another process sees the test tokens"
  "pkcs11-tool|opensc|provision tests and the by-hand baseline in make bench"
  "/usr/lib/$arch/pkcs11-spy.so|opensc-pkcs11|tests that count PKCS#11 calls"
  "/usr/lib/$arch/opensc-pkcs11.so|opensc-pkcs11|the default-module test (OpenSC with no card)"
  "/usr/lib/$arch/p11-kit-proxy.so|p11-kit-modules|conformance suite: SoftHSM2 through p11-kit's proxy"
  "/usr/lib/$arch/pkcs11/p11-kit-client.so|p11-kit-modules|conformance suite: SoftHSM2 behind p11-kit's RPC (the network HSM path)"
  "p11-kit|p11-kit|conformance suite: p11-kit server, the network HSM path's server"
  "openssl|openssl|signer tests: a PKCS#12 file written by openssl"
  "/usr/sbin/pkcsslotd|opencryptoki|conformance suite: opencryptoki's slot daemon and soft token (internal/backends)"
  "/usr/lib/$arch/pkcs11/libopencryptoki.so|opencryptoki|conformance suite: opencryptoki's PKCS#11 module"
  "/usr/include/p11-kit-1/p11-kit/pkcs11.h|libp11-kit-dev|internal/p11shim: the test module built with gcc"
  "dpkg-buildflags|dpkg-dev|make deb: Debian's hardening flags; dpkg-shlibdeps in the packaging test"
  "systemd-analyze|systemd|packaging test: verifies the units, applies sysusers.d and tmpfiles.d"
  "man|man-db|packaging test: man -l of the man pages"
  "/usr/lib/python3/dist-packages/authlib/__init__.py|python3-authlib|daemon interop test: authlib under /usr/bin/python3 gets tokens from the daemon"
  "/usr/lib/python3/dist-packages/requests_oauthlib/__init__.py|python3-requests-oauthlib|daemon interop test: requests-oauthlib under /usr/bin/python3"
  "node|nodejs|daemon interop test: openid-client and simple-oauth2 need Node 20 or later (a node from elsewhere on PATH does as well)"
  "npm|npm|daemon interop test: npm ci of daemon/testdata/interop/node (checked as a command: a nodejs from elsewhere bundles npm and conflicts with Debian's npm package)"
  "/usr/lib/$arch/pkcs11/libtpm2_pkcs11.so|libtpm2-pkcs11-1|internal/backends: the tpm2-pkcs11 backend's module"
  "swtpm|swtpm|internal/backends: the software TPM under tpm2-pkcs11"
  "/usr/sbin/tpm2-abrmd|tpm2-abrmd|internal/backends: the TPM resource manager (without one tpm2-pkcs11 fills the TPM with transient objects)"
  "/usr/lib/$arch/libtss2-tcti-tabrmd.so.0|libtss2-tcti-tabrmd0|internal/backends: tpm2-pkcs11 and tpm2-tools reach tpm2-abrmd (tpm2-abrmd does not pull it in)"
  "dbus-daemon|dbus-daemon|internal/backends: the private D-Bus bus tpm2-abrmd serves on"
  "tpm2_dictionarylockout|tpm2-tools|internal/backends: relaxes the TPM's dictionary-attack lockout for wrong-PIN tests"
  "setpriv|util-linux|TestServeClients: a daemon caller run as another uid"
  "curl|curl|TestServeClients: the caller of another uid, over the unix socket"
  "/usr/lib/$arch/pkcs11/p11-kit-client.so|p11-kit-modules|make image: p11-kit's client module, in the image"
  "/usr/lib/$arch/libpcsclite.so.1|libpcsclite1|make image: OpenSC's PC/SC library, in the image"
  "/usr/share/ca-certificates/mozilla|ca-certificates|make image: the CA certificates in the image"
  "p11-kit|p11-kit|make test-image: p11-kit server, the token's socket mounted into the container"
  "podman|podman|make test-image: loads and runs the image"
  "runc|runc|make test-image: podman's runtime (crun does not work on every machine)"
  "skopeo|skopeo|make test-image: copies the image archive"
  "/usr/sbin/pcscd|pcscd|internal/backends: the card backend's private pcscd"
  "/usr/lib/pcsc/drivers/serial/libifdvpcd.so|vsmartcard-vpcd|internal/backends: vpcd, the card backend's virtual reader"
  "/usr/include/cacard/libcacard.h|libcacard-dev|internal/backends: libcacard's virtual CAC card, in cardbridge (built with gcc)"
  "certutil|libnss3-tools|internal/backends: the card backend's NSS database (its key and certificates)"
  "nsenter|util-linux|internal/backends: pcscd in the card bridge's mount and network namespaces"
)

# Only for make deb (both architectures, lintian, the arm64 package test).
DEB_NEEDS=(
  "aarch64-linux-gnu-gcc|gcc-aarch64-linux-gnu|make deb: the arm64 binary (cgo)"
  "/usr/aarch64-linux-gnu/include/stdlib.h|libc6-dev-arm64-cross|make deb: the arm64 C library"
  "lintian|lintian|make deb: checks both packages"
  "qemu-aarch64-static|qemu-user-static|make deb's packaging test: runs the arm64 binary"
)
[[ ${1:-} == deb ]] && NEEDS+=("${DEB_NEEDS[@]}")

missing=() why=()
for need in "${NEEDS[@]}"; do
  IFS='|' read -r what pkg use <<<"$need"
  if [[ $what == /* ]]; then [[ -e $what ]] && continue; else command -v "$what" >/dev/null && continue; fi
  [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
  why+=("  $pkg: $what ($use)")
done

((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "deps: installing ${missing[*]}:" >&2
  printf '%s\n' "${why[@]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt=(apt-get -o DPkg::Lock::Timeout=600 -q)
  "${apt[@]}" update >/dev/null
  "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
echo "deps: missing ${missing[*]}:" >&2
printf '%s\n' "${why[@]}" >&2
echo "deps: install with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
exit 1
