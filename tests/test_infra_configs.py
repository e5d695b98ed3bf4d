"""The stack configs in infra/ hold the settings replays depend on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[1] / "infra"


def test_tempo_config_finds_backfilled_traces_by_search() -> None:
    cfg = yaml.safe_load((INFRA / "tempo/tempo.yaml").read_text())
    assert cfg["live_store"]["wal"]["ingestion_time_range_slack"] == "3h"
    assert cfg["query_frontend"]["search"]["query_backend_after"] == "3h"
    protocols = cfg["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317}")
    assert protocols["http"]["endpoint"].endswith(":4318}")


def test_loki_config_takes_replays() -> None:
    cfg = yaml.safe_load((INFRA / "loki/loki.yaml").read_text())
    limits = cfg["limits_config"]
    assert limits["allow_structured_metadata"] is True
    assert limits["ingestion_rate_mb"] >= 16
    assert cfg["schema_config"]["configs"][0]["schema"] == "v13"
    assert cfg["pattern_ingester"]["enabled"] is False


def test_prometheus_config_is_valid_and_allows_backfill() -> None:
    cfg = yaml.safe_load((INFRA / "prometheus/prometheus.yml").read_text())
    assert cfg["storage"]["tsdb"]["out_of_order_time_window"] == "3h"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian package prometheus)")
    out = subprocess.run([promtool, "check", "config", str(INFRA / "prometheus/prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
