#!/usr/bin/env bash
# The baseline for `make bench`: the job `mp-hsm token` does, done by hand
# with pkcs11-tool, openssl and curl, the way a script without mp-hsm would.
# It reads the certificate from the token, builds and signs a JWT grant on the
# token, posts it and prints the access token.
#
# Needs: SOFTHSM2_CONF (or a real module), MP_HSM_MODULE, MP_HSM_TOKEN_LABEL,
# MP_HSM_PIN_FILE, MP_HSM_CLIENT_ID, ISSUER, TOKEN_ENDPOINT, SCOPE, and
# KEY_ID (hex CKA_ID, default 01). Like most such scripts it hands the PIN
# to pkcs11-tool on its command line, where other users can see it: one of
# the things mp-hsm exists to avoid. It is a timing baseline, not advice.
set -euo pipefail
: "${MP_HSM_MODULE:?}" "${MP_HSM_TOKEN_LABEL:?}" "${MP_HSM_PIN_FILE:?}" "${MP_HSM_CLIENT_ID:?}"
: "${ISSUER:?}" "${TOKEN_ENDPOINT:?}" "${SCOPE:?}"
KEY_ID=${KEY_ID:-01}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PIN=$(cat "$MP_HSM_PIN_FILE")
p11() { pkcs11-tool --module "$MP_HSM_MODULE" --token-label "$MP_HSM_TOKEN_LABEL" "$@" 2>/dev/null; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# The leaf certificate and its issuer (x5c wants standard base64 DER).
p11 --read-object --type cert --id "$KEY_ID" -o "$tmp/leaf.der"
leaf=$(openssl base64 -A <"$tmp/leaf.der")
issuer_cn=$(openssl x509 -inform DER -in "$tmp/leaf.der" -noout -issuer -nameopt multiline | sed -n 's/^ *commonName *= *//p')
x5c="\"$leaf\""
for id in $(p11 --list-objects --type cert | sed -n 's/^ *ID: *//p'); do
  [ "$id" = "$KEY_ID" ] && continue
  p11 --read-object --type cert --id "$id" -o "$tmp/c.der"
  if openssl x509 -inform DER -in "$tmp/c.der" -noout -subject -nameopt multiline | grep -q "commonName *= *$issuer_cn\$"; then
    x5c="$x5c,\"$(openssl base64 -A <"$tmp/c.der")\""
  fi
done

now=$(date +%s)
jti=$(cat /proc/sys/kernel/random/uuid)
header=$(printf '{"alg":"RS256","x5c":[%s]}' "$x5c" | b64url)
claims=$(printf '{"aud":"%s","iss":"%s","scope":"%s","iat":%d,"exp":%d,"jti":"%s"}' \
  "$ISSUER" "$MP_HSM_CLIENT_ID" "$SCOPE" "$now" "$((now + 60))" "$jti" | b64url)
printf '%s.%s' "$header" "$claims" >"$tmp/input"
p11 --login --pin "$PIN" --sign --mechanism SHA256-RSA-PKCS --id "$KEY_ID" -i "$tmp/input" -o "$tmp/sig"
sig=$(b64url <"$tmp/sig")

curl -sS --fail-with-body -X POST "$TOKEN_ENDPOINT" \
  -H 'Content-Type: application/x-www-form-urlencoded' \
  --data-urlencode "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer" \
  --data-urlencode "assertion=$header.$claims.$sig" |
  sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p'
