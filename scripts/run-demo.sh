#!/usr/bin/env bash
# From a fresh clone to a running incident, in one command: install what is missing (the
# replayer into .venv; on Debian/Ubuntu the prometheus package, with root or sudo), start
# the stack (Docker Compose when a Docker engine answers, else `replayer stack` with the
# binaries found: Prometheus, and Loki / Tempo when they are on PATH), load slow_query
# ending now, and print the URLs, where the incident is in time, and queries to try.
#
# Environment: SCENARIO (default slow_query), REPLAYER (a replayer command to use instead
# of .venv's), PROMETHEUS_PORT LOKI_PORT TEMPO_PORT TEMPO_OTLP_GRPC_PORT
# TEMPO_OTLP_HTTP_PORT, REPLAYER_STACK_DIR (local stack only).
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO=${SCENARIO:-slow_query}

if [ -z "${REPLAYER:-}" ]; then
  if [ ! -x .venv/bin/replayer ]; then
    echo "Installing the replayer into $PWD/.venv (python3 -m venv; pip install -e '.[plot]')"
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[plot]"
  fi
  REPLAYER=$PWD/.venv/bin/replayer
fi
if ! command -v "$REPLAYER" >/dev/null 2>&1; then
  echo "error: $REPLAYER is not a command; unset REPLAYER to use this clone's .venv" >&2
  exit 2
fi

need_prometheus() {
  # no Docker: the local stack needs a prometheus binary; Debian and Ubuntu package it
  if [ -n "${PROMETHEUS_BIN:-}" ] || command -v prometheus >/dev/null 2>&1; then
    return
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no prometheus binary and no apt-get to install one: put Prometheus 2.x on" >&2
    echo "PATH (or set PROMETHEUS_BIN), or install Docker and run this again" >&2
    exit 2
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "error: prometheus is missing; run as root, or: apt-get install prometheus" >&2
      exit 2
    fi
    sudo=sudo
  fi
  echo "Installing Debian's prometheus package (apt-get install prometheus)"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends prometheus
  # where systemd runs, the package starts its own service on :9090, without the
  # remote-write receiver a replay needs: stop it, the local stack runs its own
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus; then
    echo "Stopping the packaged prometheus service (systemctl disable --now prometheus)"
    $sudo systemctl disable --now prometheus
  fi
}

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
  echo "Stop it:    docker compose -f infra/docker-compose.yml down"
else
  PROM_PORT=${PROMETHEUS_PORT:-9090}
  LOKI_PORT=${LOKI_PORT:-3100}
  TEMPO_PORT=${TEMPO_PORT:-3200}
  GRPC_PORT=${TEMPO_OTLP_GRPC_PORT:-4317}
  HTTP_PORT=${TEMPO_OTLP_HTTP_PORT:-4318}
  started=$(mktemp)
  trap 'rm -f "$started"' EXIT
  if "$REPLAYER" stack status >"$started" 2>/dev/null \
      && grep -q "^prometheus  ready .*:$PROM_PORT\$" "$started"; then
    # run again: the stack of the last run still answers; load into it again
    echo "A stack from an earlier run is up (replayer stack status): loading into it"
    cat "$started"
  else
    echo "No Docker engine: starting the local stack from binaries on PATH"
    need_prometheus
    "$REPLAYER" stack up --prometheus-port "$PROM_PORT" --loki-port "$LOKI_PORT" \
      --tempo-port "$TEMPO_PORT" --tempo-otlp-grpc-port "$GRPC_PORT" \
      --tempo-otlp-http-port "$HTTP_PORT" | tee "$started"
  fi
  signals=metrics
  grep -q '^loki .*ready' "$started" && signals="$signals,logs"
  grep -q '^tempo .*ready' "$started" && signals="$signals,traces"
  if [ "$signals" = metrics ]; then
    echo "Loki and Tempo are missing (see above): loading metrics only."
    echo "With Docker you get all three backends plus Grafana: docker compose -f infra/docker-compose.yml up"
  fi
  "$REPLAYER" load "$SCENARIO" --signals "$signals" \
    --prometheus-url "http://127.0.0.1:$PROM_PORT" --loki-url "http://127.0.0.1:$LOKI_PORT" \
    --tempo-url "http://127.0.0.1:$GRPC_PORT"
  PROM=http://127.0.0.1:$PROM_PORT
  echo
  echo "Prometheus  $PROM"
  echo "Stop it:    $REPLAYER stack down"
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
        for q in truth[key][:3]:
            print("  %-8s %s" % (kind, q["query"]))
'
