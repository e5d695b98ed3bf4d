#!/usr/bin/env bash
# Re-create the committed recordings of the built-in scenarios (seed 1, default window).
# tests/replayer/test_recording.py checks that these files still match the generator.
set -euo pipefail
cd "$(dirname "$0")/.."
for scenario in baseline slow_query pool_exhaustion connection_leak error_spike upstream_latency \
    lock_contention too_many_clients noisy_neighbour deploy_regression memory_leak disk_full; do
  replayer generate "$scenario" --seed 1 -o "recordings/$scenario.jsonl.gz"
done
