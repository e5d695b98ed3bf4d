#!/usr/bin/env bash
# One command to a running incident: start the stack (Docker Compose when a Docker engine
# answers, else `replayer stack` with the binaries found on PATH), load slow_query ending
# now, and print where to look and three queries to try.
#
# Environment: PROMETHEUS_PORT LOKI_PORT TEMPO_PORT TEMPO_OTLP_GRPC_PORT TEMPO_OTLP_HTTP_PORT
# REPLAYER_STACK_DIR (local stack only), SCENARIO (default slow_query).
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO=${SCENARIO:-slow_query}
REPLAYER=${REPLAYER:-replayer}
if ! command -v "$REPLAYER" >/dev/null 2>&1; then
  echo "error: the replayer command is not installed; run: pip install -e ." >&2
  exit 2
fi

if docker info >/dev/null 2>&1; then
  echo "Docker engine found: starting infra/docker-compose.yml"
  signals=metrics,logs,traces
  docker compose -f infra/docker-compose.yml up -d --wait prometheus loki tempo grafana
  docker compose -f infra/docker-compose.yml run --rm --build replayer \
    replayer load "$SCENARIO" --prometheus-url=http://prometheus:9090 \
    --loki-url=http://loki:3100 --tempo-url=http://tempo:4317
  PROM=http://localhost:9090
  echo
  echo "Grafana     http://localhost:3000 (dashboards: payment-service)"
  echo "Prometheus  $PROM"
  echo "Loki        http://localhost:3100"
  echo "Tempo       http://localhost:3200"
else
  PROM_PORT=${PROMETHEUS_PORT:-9090}
  LOKI_PORT=${LOKI_PORT:-3100}
  TEMPO_PORT=${TEMPO_PORT:-3200}
  GRPC_PORT=${TEMPO_OTLP_GRPC_PORT:-4317}
  HTTP_PORT=${TEMPO_OTLP_HTTP_PORT:-4318}
  echo "No Docker engine: starting the local stack from binaries on PATH"
  "$REPLAYER" stack up --prometheus-port "$PROM_PORT" --loki-port "$LOKI_PORT" \
    --tempo-port "$TEMPO_PORT" --tempo-otlp-grpc-port "$GRPC_PORT" \
    --tempo-otlp-http-port "$HTTP_PORT" | tee /tmp/replayer-demo-stack.txt
  signals=metrics
  grep -q '^loki .*ready' /tmp/replayer-demo-stack.txt && signals="$signals,logs"
  grep -q '^tempo .*ready' /tmp/replayer-demo-stack.txt && signals="$signals,traces"
  if [ "$signals" = metrics ]; then
    echo "Loki and Tempo are missing (see above): loading metrics only."
    echo "With Docker you get all three backends plus Grafana: docker compose -f infra/docker-compose.yml up"
  fi
  "$REPLAYER" load "$SCENARIO" --signals "$signals" \
    --prometheus-url "http://127.0.0.1:$PROM_PORT" --loki-url "http://127.0.0.1:$LOKI_PORT" \
    --tempo-url "http://127.0.0.1:$GRPC_PORT"
  PROM=http://127.0.0.1:$PROM_PORT
  echo
  echo "Prometheus  $PROM   (stop everything with: replayer stack down)"
  echo "No Grafana without Docker: query Prometheus directly, or point your own Grafana at it."
fi

echo
# only the queries of what was loaded: LogQL and TraceQL need Loki and Tempo
echo "Queries to try (ground truth of $SCENARIO, signals $signals):"
"$REPLAYER" inspect "$SCENARIO" --json | SIGNALS="$signals" python3 -c '
import json, os, sys
truth = json.load(sys.stdin)["truth"]
loaded = os.environ["SIGNALS"].split(",")
for signal, kind, key in (("metrics", "PromQL", "promql"), ("logs", "LogQL", "logql"),
                          ("traces", "TraceQL", "traceql")):
    if signal in loaded:
        for q in truth[key][:1]:
            print("  %-8s %s" % (kind, q["query"]))
'
