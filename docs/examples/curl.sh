#!/bin/sh
# Tokens from `mp-hsm serve` with curl. The daemon answers in Maskinporten's
# shape: {"access_token":"...","token_type":"Bearer","expires_in":97,"scope":"..."}
# (expires_in is what is left of the cached token).
set -eu
SOCK=${MP_HSM_SOCKET:-${XDG_RUNTIME_DIR:-/run/mp-hsm}/mp-hsm.sock}
SCOPE=${1:-altinn:serviceowner}

# Over the unix socket: no credentials; the host name in the URL is ignored.
curl -sS --fail-with-body --unix-socket "$SOCK" \
  -d grant_type=client_credentials --data-urlencode "scope=$SCOPE" \
  http://mp-hsm/token
echo

# Just the token, for a header (jq):
TOKEN=$(curl -sS --fail-with-body --unix-socket "$SOCK" \
  -d grant_type=client_credentials --data-urlencode "scope=$SCOPE" \
  http://mp-hsm/token | jq -r .access_token)
echo "Authorization: Bearer ${TOKEN%"${TOKEN#??????????}"}..."

# With optional parameters: a delegation (consumer_org), an audience
# (resource, repeatable) and an Altinn token instead of the Maskinporten one:
#   -d consumer_org=910000012 -d resource=https://api.example.no -d altinn=true

# Over loopback TCP (mp-hsm serve --listen tcp:127.0.0.1:8400 --client-secret-file FILE):
# HTTP Basic with the daemon's client id and the secret.
if [ -n "${MP_HSM_CLIENT_ID:-}" ] && [ -n "${MP_HSM_CLIENT_SECRET_FILE:-}" ]; then
  curl -sS --fail-with-body -u "$MP_HSM_CLIENT_ID:$(cat "$MP_HSM_CLIENT_SECRET_FILE")" \
    -d grant_type=client_credentials --data-urlencode "scope=$SCOPE" \
    http://127.0.0.1:8400/token
  echo
fi

# Health, readiness (503 with the reason when the card is away) and metrics:
curl -sS --unix-socket "$SOCK" http://mp-hsm/readyz
curl -sS --unix-socket "$SOCK" http://mp-hsm/metrics | grep '^mphsm_' | head
