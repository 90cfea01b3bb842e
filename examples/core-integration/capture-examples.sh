#!/usr/bin/env bash
# Prints real requests and responses of a freshly started service, for the examples in
# docs/integration/connectors-service.md. Paste what changed into the guide, keeping each
# block's `<!-- example: ... -->` marker; `cargo test --test it guide` checks them against the
# OpenAPI document.
#
#   bash examples/core-integration/capture-examples.sh [path/to/connectors] > /tmp/examples.md
#
# Needs curl and jq. The service runs in the local profile on 127.0.0.1:8080 (stop anything
# else listening there first) with SQLite in a temporary directory.
set -euo pipefail

BIN=$(realpath "${1:-target/debug/connectors}")
WORK=$(mktemp -d)
BASE=http://127.0.0.1:8080
TOKEN=core-example-operator-token-0123456789
TENANT=6b1f0a52-1d2e-4c61-9d0a-2d9a1c3f5e11
CORE=http://127.0.0.1:3000

(
  cd "$WORK"
  exec env POBLYSH_PROFILE=local POBLYSH_API_BIND_ADDR=127.0.0.1:8080 POBLYSH_DATA_DIR="$WORK" \
  POBLYSH_OPERATOR_TOKEN="$TOKEN" POBLYSH_ALLOWED_RETURN_URLS="$CORE/" \
  POBLYSH_ALLOWED_REDIRECT_URIS="$CORE/connectors/callback/sandbox" \
  POBLYSH_CONNECT_FALLBACK_RETURN_URL="$CORE/settings/connectors" \
  POBLYSH_LOG_FORMAT=json POBLYSH_LOG_LEVEL=warn "$BIN" serve >"$WORK/log" 2>&1
) &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.2; done

auth=(-H "Authorization: Bearer $TOKEN" -H "X-Tenant-Id: $TENANT")
# The browser's cookies: the authorize hop's binding cookie goes back with the callback.
JAR="$WORK/cookies"
browse=(-c "$JAR" -b "$JAR")
# to_callback AUTHORIZE_URL: the service's hop, then the sandbox's page; prints the callback URL.
to_callback() {
  local provider_page
  provider_page=$(curl -s "${browse[@]}" -o /dev/null -w '%{redirect_url}' "$1")
  curl -s -o /dev/null -w '%{redirect_url}' "$provider_page"
}

# show MARKER curl-args...: the response body, pretty, under its marker.
show() {
  local marker=$1
  shift
  echo "<!-- example: $marker -->"
  echo '```json'
  curl -s "$@" | jq .
  echo '```'
  echo
}
headers() {
  echo "--- $1"
  shift
  curl -s -o /dev/null -D - "$@" | grep -iE '^(HTTP|location|retry-after|x-request-id|content-type)'
  echo
}

show "GET /providers 200" "$BASE/providers"
show "POST /connect/{provider} 200" -X POST "${auth[@]}" -H 'Content-Type: application/json' \
  -d "{\"return_to\": \"$CORE/settings/connectors\"}" "$BASE/connect/sandbox"

# Pattern A: the provider redirects to the service, which redirects to return_to.
AUTHORIZE=$(curl -s -X POST "${auth[@]}" -H 'Content-Type: application/json' \
  -d "{\"return_to\": \"$CORE/settings/connectors\"}" "$BASE/connect/sandbox" | jq -r .authorize_url)
headers "authorize hop (binding cookie)" "$AUTHORIZE"
AUTHORIZE=$(curl -s -X POST "${auth[@]}" -H 'Content-Type: application/json' \
  -d "{\"return_to\": \"$CORE/settings/connectors\"}" "$BASE/connect/sandbox" | jq -r .authorize_url)
CALLBACK=$(to_callback "$AUTHORIZE")
headers "callback with return_to" "${browse[@]}" "$CALLBACK"
headers "callback replayed (state already used)" "${browse[@]}" "$CALLBACK"
headers "callback with an unknown state (the fallback return URL)" \
  "$BASE/connect/sandbox/callback?code=x&state=no-such-state"

# Without return_to: JSON.
AUTHORIZE=$(curl -s -X POST "${auth[@]}" "$BASE/connect/sandbox" | jq -r .authorize_url)
CALLBACK=$(to_callback "$AUTHORIZE")
show "GET /connect/{provider}/callback 200" "${browse[@]}" "$CALLBACK"
show "GET /connect/{provider}/callback 400" "${browse[@]}" "$CALLBACK"

# Pattern B: Core receives the redirect and forwards code, state and the binding it kept.
show "POST /connect/{provider} 200 (Core's redirect_uri)" -X POST "${auth[@]}" -H 'Content-Type: application/json' \
  -d "{\"redirect_uri\": \"$CORE/connectors/callback/sandbox\"}" "$BASE/connect/sandbox"
AUTHORIZE=$(curl -s -X POST "${auth[@]}" -H 'Content-Type: application/json' \
  -d "{\"redirect_uri\": \"$CORE/connectors/callback/sandbox\"}" "$BASE/connect/sandbox" | jq -r .authorize_url)
headers "authorize to Core's redirect_uri" "$AUTHORIZE"

show "GET /connections 200" "${auth[@]}" "$BASE/connections"
ID=$(curl -s "${auth[@]}" "$BASE/connections" | jq -r '.connections[0].id')
show "GET /connections/{id} 200" "${auth[@]}" "$BASE/connections/$ID"
show "POST /connections/{id}/sync 202" -X POST "${auth[@]}" "$BASE/connections/$ID/sync"
sleep 3
JOB=$(curl -s "${auth[@]}" "$BASE/jobs?connection_id=$ID&limit=1" | jq -r '.jobs[0].id')
show "GET /jobs/{id} 200" "${auth[@]}" "$BASE/jobs/$JOB"
show "GET /jobs 200" "${auth[@]}" "$BASE/jobs?connection_id=$ID&status=succeeded&limit=1"
show "GET /signals 200" "${auth[@]}" "$BASE/signals?connection_id=$ID&limit=2"
CURSOR=$(curl -s "${auth[@]}" "$BASE/signals?connection_id=$ID&limit=2" | jq -r .next_cursor)
show "GET /signals 200 (next page)" "${auth[@]}" "$BASE/signals?connection_id=$ID&limit=2&cursor=$CURSOR"
SIGNAL=$(curl -s "${auth[@]}" "$BASE/signals?limit=1" | jq -r '.signals[0].id')
show "GET /signals/{id} 200" "${auth[@]}" "$BASE/signals/$SIGNAL"

# Errors.
show "GET /signals 401" "$BASE/signals"
show "GET /signals 400 (TENANT_HEADER_REQUIRED)" -H "Authorization: Bearer $TOKEN" "$BASE/signals"
show "GET /signals 400 (INVALID_TENANT_ID)" -H "Authorization: Bearer $TOKEN" -H 'X-Tenant-Id: acme' "$BASE/signals"
show "GET /signals 400 (VALIDATION_FAILED)" "${auth[@]}" "$BASE/signals?limit=500&kind=nope"
show "GET /signals 400 (INVALID_CURSOR)" "${auth[@]}" "$BASE/signals?kind=sandbox_event_created&cursor=$CURSOR"
show "GET /connections/{id} 404" "${auth[@]}" "$BASE/connections/01a21355-0000-7000-8000-000000000000"
show "POST /connect/{provider} 404" -X POST "${auth[@]}" "$BASE/connect/myspace"
show "POST /connect/{provider} 409" -X POST "${auth[@]}" "$BASE/connect/github"

show "DELETE /connections/{id} 200" -X DELETE "${auth[@]}" "$BASE/connections/$ID"
show "POST /connections/{id}/sync 409" -X POST "${auth[@]}" "$BASE/connections/$ID/sync"
AUTHORIZE=$(curl -s -X POST "${auth[@]}" "$BASE/connect/sandbox" | jq -r .authorize_url)
STATE=$(echo "$AUTHORIZE" | sed -n 's/.*[?&]state=\([^&]*\).*/\1/p')
show "GET /connect/{provider}/callback 400 (OAUTH_DENIED)" "$BASE/connect/sandbox/callback?error=access_denied&state=$STATE"
headers "purge" -X DELETE "${auth[@]}" "$BASE/connections/$ID?purge=true"
show "DELETE /tenant 200" -X DELETE "${auth[@]}" "$BASE/tenant"
