#!/usr/bin/env bash
# Makes sure the system packages mp-hsm's tests and demo need are present:
# SoftHSM2 (the token the tests run against) and OpenSC (pkcs11-spy counts
# PKCS#11 calls; pkcs11-tool is used by bench/). Installs them when run as
# root on a Debian-like system; otherwise says the one command to run.
set -euo pipefail

need=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
[ -e /usr/lib/x86_64-linux-gnu/pkcs11-spy.so ] || command -v pkcs11-tool >/dev/null || need+=(opensc)
command -v gcc >/dev/null || need+=(gcc)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

cmd="apt-get install -y ${need[*]}"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
  exit 0
fi
echo "deps: missing ${need[*]}; install with: sudo $cmd" >&2
exit 1
