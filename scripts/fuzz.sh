#!/usr/bin/env bash
# make fuzz: runs every Go native fuzz target of the module, each for
# FUZZTIME (default 30s). Seeds live in each package's testdata/fuzz/; a
# crasher found is written there by go test and should be committed as a
# regression seed once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-30s}
status=0
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== $pkg $target ($FUZZTIME)"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"; then
      status=1
      echo "!! $target found a failure; the input is under $(go list -f '{{.Dir}}' "$pkg")/testdata/fuzz/$target/"
    fi
  done
done
exit $status
