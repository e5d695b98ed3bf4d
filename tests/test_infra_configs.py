"""The stack configs in infra/ hold the settings replays depend on."""

from __future__ import annotations

import json
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


COMPOSE = INFRA / "docker-compose.yml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_image_is_pinned() -> None:
    for name, svc in _compose()["services"].items():
        image = svc.get("image", "")
        assert image, f"{name} has no image"
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest" and any(c.isdigit() for c in tag), \
            f"{name}: image {image!r} is not pinned to a version"


def test_long_running_services_have_health_checks_and_limits() -> None:
    for name, svc in _compose()["services"].items():
        assert "mem_limit" in svc, f"{name} has no memory limit"
        if svc.get("restart") == "no":
            continue  # the one-shot replayer
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_depends_on_waits_for_health_of_services_that_have_it() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] == "service_healthy"
            assert "healthcheck" in services[dep]


def test_mounted_files_exist_and_ports_match_the_configs() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (INFRA / src).exists(), f"{name} mounts missing {src}"
    ports = {name: {p.split(":")[0] for p in svc.get("ports", [])}
             for name, svc in services.items()}
    assert ports["prometheus"] == {"9090"} and ports["loki"] == {"3100"}
    assert ports["tempo"] == {"3200", "4317", "4318"} and ports["grafana"] == {"3000"}
    loki = (INFRA / "loki/loki.yaml").read_text()
    assert "${LOKI_HTTP_PORT:-3100}" in loki
    tempo = (INFRA / "tempo/tempo.yaml").read_text()
    for default in ("${TEMPO_HTTP_PORT:-3200}", "0.0.0.0:4317}", "0.0.0.0:4318}"):
        assert default in tempo
    replay = services["replayer"]["command"]
    assert "--tempo-url=http://tempo:4317" in replay and "--loki-url=http://loki:3100" in replay
    prom = yaml.safe_load((INFRA / "prometheus/prometheus.compose.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert targets == {"payment-service:8000", "card-processor:8080", "postgres-exporter:9187"}
    assert {"payment-service", "card-processor", "postgres-exporter"} <= services.keys()


def _dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text())
            for p in sorted((INFRA / "grafana/dashboards").glob("*.json"))}


def test_datasource_uids_used_by_dashboards_exist() -> None:
    ds = yaml.safe_load((INFRA / "grafana/provisioning/datasources/datasources.yml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    assert uids == {"prometheus", "loki", "tempo"}
    links = {d["uid"]: d.get("jsonData", {}) for d in ds["datasources"]}
    assert links["prometheus"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == "tempo"
    assert links["loki"]["derivedFields"][0]["datasourceUid"] == "tempo"
    assert links["tempo"]["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert links["tempo"]["tracesToMetrics"]["datasourceUid"] == "prometheus"
    used = set()
    dashboards = _dashboards()
    assert set(dashboards) == {"service-overview.json", "database-pool.json", "incident.json"}
    for dash in dashboards.values():
        for panel in dash["panels"]:
            used.add(panel["datasource"]["uid"])
            used.update(t["datasource"]["uid"] for t in panel["targets"])
    assert used and used <= uids


def test_every_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian package prometheus)")
    for cfg in ("prometheus/prometheus.yml", "prometheus/prometheus.compose.yml"):
        out = subprocess.run([promtool, "check", "config", str(INFRA / cfg)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
