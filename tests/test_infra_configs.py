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
        facts = IMAGES[svc["image"]]
        if "healthcheck" not in svc:
            # only where nothing in the image can check it (Mimir): a one-shot waiter must
            assert "health_flag" not in facts and not any(
                _program_in(svc["image"], p) for p in ("wget", "curl")), name
            waiter = _compose()["services"].get(f"{name}-ready")
            assert waiter and waiter["depends_on"] == {name: {"condition": "service_started"}}
            assert f"http://{name}:" in " ".join(waiter["command"])
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_depends_on_waits_for_health_of_services_that_have_it() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            target = services[dep]
            if "healthcheck" in target:
                assert cond["condition"] == "service_healthy", (name, dep)
            elif target.get("restart") == "no":  # a one-shot, e.g. mimir-ready
                assert cond["condition"] == "service_completed_successfully", (name, dep)
            else:
                # only the waiter may start beside a service without a health check
                assert cond["condition"] == "service_started", (name, dep)
                assert svc.get("restart") == "no" and name.endswith("-ready"), (name, dep)


IMAGES = json.loads((Path(__file__).parent / "data/compose/container-images.json")
                    .read_text())["images"]


def _program_in(image: str, program: str) -> bool:
    facts = IMAGES[image]["programs"]
    return program in facts or any(p.rsplit("/", 1)[-1] == program for p in facts
                                   if not program.startswith("/"))


def test_health_checks_and_commands_run_programs_their_images_have() -> None:
    """Tempo 3.0.3's and Mimir 3.0.2's images are distroless: a `wget` health check there
    never passes and everything that waits on it never starts (the facts, with the
    Dockerfiles they come from, are in tests/data/compose/container-images.json)."""
    for name, svc in _compose()["services"].items():
        image = svc["image"]
        assert image in IMAGES, (
            f"{name}: {image} has no entry in tests/data/compose/container-images.json; read "
            "its Dockerfile at that tag and record its shell and programs first")
        facts = IMAGES[image]
        test = svc.get("healthcheck", {}).get("test")
        if test:
            form, *argv = test
            assert form in ("CMD", "CMD-SHELL"), (name, test)
            if form == "CMD-SHELL":
                assert facts["shell"], f"{name}: CMD-SHELL health check but {image} has no shell"
                argv = argv[0].split()
            assert _program_in(image, argv[0]), (
                f"{name}: health check runs {argv[0]!r}, which {image} lacks "
                f"({facts['dockerfile']}: {facts['programs']})")
        command = svc.get("command")
        if isinstance(command, list) and command and not command[0].startswith("-"):
            # a command that is not just flags for the entrypoint runs a program itself
            assert _program_in(image, command[0]), (name, command[0], facts["programs"])


def test_the_checks_catch_a_missing_program() -> None:
    """The check above is not vacuous: the old Tempo health check fails it."""
    assert not _program_in("grafana/tempo:3.0.3", "wget")
    assert not _program_in("grafana/mimir:3.0.2", "wget")
    assert _program_in("grafana/loki:3.4.2", "/busybox/wget")
    assert not _program_in("grafana/loki:3.4.2", "/usr/bin/wget")


def test_published_ports_are_bound_to_loopback_and_no_token_is_fixed() -> None:
    """A published port without an address listens on every interface: the payment app's
    incident switch and PostgreSQL's payments/payments login would face the network."""
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        token = (svc.get("environment") or {}).get("INCIDENT_TOKEN")
        if token is not None:
            assert token == "${INCIDENT_TOKEN:-}", (name, token)


def test_scale_profile_runs_mimir_with_limits_for_a_replay() -> None:
    services = _compose()["services"]
    mimir = services["mimir"]
    assert mimir["profiles"] == ["scale"] and "-target=all" in mimir["command"]
    cfg = yaml.safe_load((INFRA / "mimir/mimir.yaml").read_text())
    limits = cfg["limits"]
    assert limits["max_global_exemplars_per_user"] > 0  # Mimir's default 0 keeps none
    assert limits["out_of_order_time_window"] == "3h"
    assert cfg["frontend"]["address"] == "127.0.0.1"
    load = services["replayer-mimir"]["command"]
    assert "--tenant=demo" in load
    assert "--remote-write-url=http://mimir:9009/api/v1/push" in load
    assert "--prometheus-url=http://mimir:9009/prometheus" in load
    ds = yaml.safe_load((INFRA / "grafana/provisioning/datasources/datasources.yml").read_text())
    mimir_ds = next(d for d in ds["datasources"] if d["uid"] == "mimir")
    assert mimir_ds["url"] == "http://mimir:9009/prometheus"
    assert mimir_ds["jsonData"]["httpHeaderName1"] == "X-Scope-OrgID"
    assert mimir_ds["secureJsonData"]["httpHeaderValue1"] == "demo"


def test_mounted_files_exist_and_ports_match_the_configs() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (INFRA / src).exists(), f"{name} mounts missing {src}"
    ports = {name: {p.split(":")[0] for p in svc.get("ports", [])}
             for name, svc in services.items()}
    assert ports["prometheus"] == {"127.0.0.1"}
    ports = {name: {p.split(":")[1] for p in svc.get("ports", [])}
             for name, svc in services.items()}
    assert ports["prometheus"] == {"9090"} and ports["loki"] == {"3100"}
    assert ports["tempo"] == {"3200", "4317", "4318"} and ports["grafana"] == {"3000"}
    assert ports["mimir"] == {"9009"}
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
    assert uids == {"prometheus", "mimir", "loki", "tempo"}
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
