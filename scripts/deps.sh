#!/usr/bin/env bash
# Makes sure the system packages mp-hsm's tests and demo need are present:
# SoftHSM2 (the token the tests run against) and OpenSC (pkcs11-spy counts
# PKCS#11 calls; pkcs11-tool is used by bench/). With the argument "deb",
# also what the Debian packages (make deb) and their test need: the arm64
# cross compiler and C library, qemu-user-static to run the arm64 binary,
# dpkg-dev (dpkg-buildflags, dpkg-shlibdeps), lintian, systemd
# (systemd-analyze verify) and man-db (man -l). Installs them when run as
# root on a Debian-like system, and says what it installs; otherwise says
# the one command to run.
set -euo pipefail

need=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
[ -e /usr/lib/x86_64-linux-gnu/pkcs11-spy.so ] || command -v pkcs11-tool >/dev/null || need+=(opensc)
command -v gcc >/dev/null || need+=(gcc)

deb=()
if [ "${1:-}" = deb ]; then
  command -v aarch64-linux-gnu-gcc >/dev/null || deb+=(gcc-aarch64-linux-gnu)
  [ -e /usr/aarch64-linux-gnu/include/stdlib.h ] || deb+=(libc6-dev-arm64-cross)
  command -v qemu-aarch64-static >/dev/null || deb+=(qemu-user-static)
  command -v dpkg-buildflags >/dev/null && command -v dpkg-shlibdeps >/dev/null || deb+=(dpkg-dev)
  command -v lintian >/dev/null || deb+=(lintian)
  command -v systemd-analyze >/dev/null || deb+=(systemd)
  command -v man >/dev/null || deb+=(man-db)
fi

if [ ${#need[@]} -eq 0 ] && [ ${#deb[@]} -eq 0 ]; then
  exit 0
fi

# Other people's apt-get may hold the lock: wait for it, up to 10 minutes.
apt=(apt-get -o DPkg::Lock::Timeout=600)
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  "${apt[@]}" update -qq >/dev/null
  if [ ${#need[@]} -gt 0 ]; then
    echo "deps: installing ${need[*]}" >&2
    "${apt[@]}" install -y -qq "${need[@]}" >/dev/null
  fi
  if [ ${#deb[@]} -gt 0 ]; then
    # Without Recommends: lintian's and qemu's would pull in far more.
    echo "deps: installing, for the Debian packages: ${deb[*]}" >&2
    "${apt[@]}" install -y -qq --no-install-recommends "${deb[@]}" >/dev/null
  fi
  exit 0
fi
echo "deps: missing ${need[*]} ${deb[*]}; install with: sudo apt-get install -y ${need[*]} ${deb[*]}" >&2
exit 1
