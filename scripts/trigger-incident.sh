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
curl -fsS -X POST "$URL/incident" -H 'Content-Type: application/json' \
  ${INCIDENT_TOKEN:+-H "X-Incident-Token: $INCIDENT_TOKEN"} -d "{\"mode\": \"$MODE\"}"
echo
