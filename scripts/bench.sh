#!/usr/bin/env bash
# make bench: every benchmark of the module on SoftHSM2 and the emulator,
# in one run, then docs/BENCHMARKS.md from that run (bench/report).
#
#   1. builds mp-hsm and provisions a SoftHSM2 store for the daemon in
#      bin/bench/ (the go test benchmarks make their own tokens);
#   2. runs the benchmarks of every package, one package at a time (-p 1),
#      COUNT times each (default 5) with -benchmem: those named *Parallel*
#      at -cpu 1,2 (2 goroutines against 1), the others at the default
#      GOMAXPROCS; each pair of a comparison is in the same go test process
#      (among them cmd/mp-hsm's BenchmarkTokenRPC: `mp-hsm token` against
#      internal/p11bare over p11-kit's RPC with 2 ms per round trip);
#   3. if `mp-hsm serve` works, offers it load on loopback (bench/load);
#   4. counts PKCS#11 calls with OpenSC's pkcs11-spy (the counting tests
#      TestE2ETokenCallCount and TestCallsPerGrant write bin/bench/calls.txt);
#   5. writes docs/BENCHMARKS.md and docs/bench-daemon-latency.png.
#
# Raw output stays in bin/bench/ (bench.txt, load.json, calls.txt). Takes about 4
# minutes on 2 cores. COUNT and BENCHTIME (default 1s) can be set:
#   make bench COUNT=10 BENCHTIME=2s
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
# bench/ is a module of its own (github.com/mp-hsm/mp-hsm/bench): its
# plotting and load-generating dependencies stay out of the library's.
COUNT=${COUNT:-5}
BENCHTIME=${BENCHTIME:-1s}
out=bin/bench
raw=$out/bench.txt
mkdir -p "$out"
rm -f "$raw" "$out/load.json" "$out/calls.txt"
start=$(date +%s)

# The report's own module (gonum/plot: too heavy to compile in make test)
# is vetted and tested before it is trusted with the figures.
echo "== vetting and testing bench/ (the load generator and the report)"
(cd bench && go vet ./... && go test -count=1 ./...)

echo "== building mp-hsm and provisioning a SoftHSM2 store in $out/store"
go build -o "$out/mp-hsm" ./cmd/mp-hsm
go run ./softhsm/cmd/provision -dir "$out/store" >/dev/null

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit with uncommitted changes"; fi
{
  echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "# go: $(go version)"
  echo "# cores: $(nproc)"
  echo "# gomaxprocs: ${GOMAXPROCS:-$(nproc)}"
  echo "# kernel: $(uname -sr)"
  echo "# commit: $commit"
  echo "# softhsm: $(softhsm2-util --version 2>/dev/null || echo unknown)"
  echo "# count: $COUNT"
  echo "# benchtime: $BENCHTIME"
} >"$raw"

status=0
bench() {
  echo "# cmd: go test $*" >>"$raw"
  echo "== go test $*"
  set +e
  go test "$@" 2>&1 | tee -a "$raw"
  local rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || status=1
}
common=(-p 1 -run '^$' -count "$COUNT" -benchtime "$BENCHTIME" -benchmem -timeout 30m)
bench "${common[@]}" -bench . -skip Parallel ./...
bench "${common[@]}" -bench Parallel -cpu 1,2 ./...

echo "== load on mp-hsm serve (bench/load)"
if "$out/mp-hsm" serve --help >/dev/null 2>&1; then
  echo "# cmd: (cd bench && go run ./load -mp-hsm $top/$out/mp-hsm -store $top/$out/store -out $top/$out/load.json)" >>"$raw"
  (cd bench && go run ./load -mp-hsm "$top/$out/mp-hsm" -store "$top/$out/store" -out "$top/$out/load.json") ||
    echo "bench/load failed: the report will say the daemon's latency was not measured"
else
  echo "mp-hsm has no serve command: the report will say the daemon's latency was not measured"
fi

echo "== PKCS#11 calls (pkcs11-spy)"
echo "# cmd: MP_HSM_CALLS_FILE=$out/calls.txt go test -count=1 -run 'TestE2ETokenCallCount|TestCallsPerGrant' ./cmd/mp-hsm ./signer/p11" >>"$raw"
if ! MP_HSM_CALLS_FILE="$top/$out/calls.txt" go test -count=1 -run 'TestE2ETokenCallCount|TestCallsPerGrant' ./cmd/mp-hsm ./signer/p11; then
  echo "the counting tests failed: see 'PKCS#11 calls' in docs/BENCHMARKS.md" >&2
  status=1
fi

echo "# elapsed: $(($(date +%s) - start)) s" >>"$raw"
(cd bench && go run ./report -in "$top/$raw" -load "$top/$out/load.json" -calls "$top/$out/calls.txt" -out "$top/docs/BENCHMARKS.md" -plot "$top/docs/bench-daemon-latency.png")
echo "== wrote docs/BENCHMARKS.md (raw output in $raw)"
[ "$status" -eq 0 ] || echo "some benchmarks failed: see 'Problems in this run' in docs/BENCHMARKS.md" >&2
exit $status
