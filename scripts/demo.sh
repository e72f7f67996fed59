#!/usr/bin/env bash
# make demo: the main job of mp-hsm from start to end on this machine, with a
# throwaway SoftHSM2 token in .demo/ standing in for the smart card and the
# local emulator standing in for Maskinporten. Nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*" 2>/dev/null || printf '\n== %s\n' "$*"; }
[ -n "${NO_COLOR:-}" ] && step() { printf '\n== %s\n' "$*"; }

# run shows a command exactly as it runs it ($MP is bin/mp-hsm), then runs it.
run() { printf '$'; printf ' %q' "$@"; printf '\n'; "$@"; }

step "Building mp-hsm"
mkdir -p bin
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}
go build -ldflags "-X main.buildVersion=$VERSION" -o bin/mp-hsm ./cmd/mp-hsm
MP=bin/mp-hsm
$MP --version

step "Provisioning a demo SoftHSM2 token in .demo/ (a test PKI like Buypass's, keys generated on the token)"
go run ./softhsm/cmd/provision -dir .demo

# The demo token's settings: module, token label, PIN file (never the PIN itself).
set -a
# shellcheck disable=SC1091
. .demo/client.env
set +a
export MP_HSM_CLIENT_ID=demo-client

step "Starting the Maskinporten emulator on a free loopback port"
$MP emulate --root .demo/root.pem --client-id "$MP_HSM_CLIENT_ID" --org-number "$MP_HSM_ORG_NUMBER" \
  --scope demo:read --scope demo:write --admin-client-id demo-admin >.demo/emulator.url 2>.demo/emulator.log &
EMU=$!
trap 'kill $EMU 2>/dev/null || true; wait $EMU 2>/dev/null || true' EXIT
# Its first line is the metadata URL, its second the self-service API's base.
for _ in $(seq 50); do [ "$(wc -l <.demo/emulator.url)" -ge 2 ] && break; sleep 0.1; done
WELL_KNOWN=$(sed -n 1p .demo/emulator.url)
ADMIN_API=$(sed -n 2p .demo/emulator.url)
[ -n "$WELL_KNOWN" ] || { echo "the emulator did not start:"; cat .demo/emulator.log; exit 1; }
export MP_HSM_WELL_KNOWN=$WELL_KNOWN
echo "metadata: $WELL_KNOWN"
echo "self-service API: $ADMIN_API"

step "mp-hsm list: what is on the token"
$MP list --token-label "$MP_HSM_TOKEN_LABEL"

step "mp-hsm token: sign a grant on the token, send it with the chain as x5c, get an access token"
TOKEN_JSON=$(run $MP token --token-label "$MP_HSM_TOKEN_LABEL" --scope demo:read --output json)
echo "$TOKEN_JSON"

step "mp-hsm inspect: what the access token says (decoded only, not verified)"
TOKEN=$(printf '%s' "$TOKEN_JSON" | sed -n 's/.*"access_token": *"\([^"]*\)".*/\1/p')
printf '%s\n' "$TOKEN" | $MP inspect -

step "mp-hsm doctor: the whole setup, check by check"
$MP doctor --token-label "$MP_HSM_TOKEN_LABEL" --scope demo:read

step "mp-hsm admin keys rotate: a new key made on the token, registered through the self-service API, proven with a token"
run $MP admin keys rotate --token-label "$MP_HSM_TOKEN_LABEL" --client-id "$MP_HSM_CLIENT_ID" --admin-client-id demo-admin \
  --admin-api "$ADMIN_API" --label "demo-rotated-$(date +%s)" --scope demo:read
run $MP admin keys list --token-label "$MP_HSM_TOKEN_LABEL" --client-id "$MP_HSM_CLIENT_ID" --admin-client-id demo-admin --admin-api "$ADMIN_API"

step "Done: stopping the emulator"
