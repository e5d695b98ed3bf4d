#!/usr/bin/env bash
# Switch live_app's incident mode (the last three need PostgreSQL):
#   normal | slow_query | pool_exhaustion | connection_leak | error_spike | upstream_latency |
#   lock_contention | too_many_clients | noisy_neighbour
#   scripts/trigger-incident.sh slow_query            (LIVE_APP_URL, INCIDENT_TOKEN)
set -euo pipefail
MODE=${1:-}
URL=${LIVE_APP_URL:-http://127.0.0.1:8000}
case "$MODE" in
  normal|slow_query|pool_exhaustion|connection_leak|error_spike|upstream_latency|lock_contention|too_many_clients|noisy_neighbour) ;;
  *) echo "usage: $0 normal|slow_query|pool_exhaustion|connection_leak|error_spike|upstream_latency|lock_contention|too_many_clients|noisy_neighbour" >&2; exit 2 ;;
esac
body=$(mktemp)
why=$(mktemp)
trap 'rm -f "$body" "$why"' EXIT
if ! code=$(curl -sS -o "$body" -w '%{http_code}' -X POST "$URL/incident" \
    -H 'Content-Type: application/json' \
    ${INCIDENT_TOKEN:+-H "X-Incident-Token: $INCIDENT_TOKEN"} -d "{\"mode\": \"$MODE\"}" \
    2>"$why")
then
  echo "error: no live_app answers at $URL ($(head -n 1 "$why"))." >&2
  echo "Start it with:  pip install -e '.[live]' && python -m live_app   (listens on :8000)" >&2
  echo "or with Docker: INCIDENT_TOKEN=... docker compose -f infra/docker-compose.yml --profile live up -d --wait" >&2
  echo "or point LIVE_APP_URL at where it runs." >&2
  exit 1
fi
if [ "$code" != 200 ]; then
  echo "error: live_app at $URL answered $code: $(cat "$body")" >&2
  if [ "$code" = 403 ]; then
    echo "Export the INCIDENT_TOKEN the app was started with (the compose stack takes it from" >&2
    echo "your environment), or run this on the app's own machine against 127.0.0.1." >&2
  fi
  exit 1
fi
cat "$body"
echo
