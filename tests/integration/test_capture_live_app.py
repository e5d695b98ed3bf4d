"""capture end to end: live_app (real OTel SDK exporting OTLP to the capture) + traffic +
an incident switch -> a recording whose spans, logs and metrics show the incident, and
which replays into the real Prometheus."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import requests
import uvicorn
from click.testing import CliRunner

from live_app.app import create_app
from live_app.settings import Settings
from live_app.traffic import run_traffic
from replayer.cli import cli
from replayer.record.capture import CaptureOptions, run_capture
from replayer.recording import read_recording, write_recording
from tests.conftest import app_records, cached_incident, error_records

from .prometheus_server import free_port, running_prometheus

pytestmark = pytest.mark.integration


def _serve(settings: Settings) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    # log level info: uvicorn's access lines are exported records, as in production
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="info"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def test_capture_a_connection_leak_from_live_app(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "100")
    grpc_port = free_port()
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'p.db'}", pool_timeout_s=0.3,
                        otlp_endpoint=f"http://127.0.0.1:{grpc_port}", leak_ratio=1.0)
    server, thread, url = _serve(settings)
    result: dict[str, object] = {}

    def capture() -> None:
        result["out"] = run_capture(CaptureOptions(
            duration_s=5.0, scrape_urls=(f"{url}/metrics",), interval_s=0.5,
            grpc_addr=f"127.0.0.1:{grpc_port}", http_addr=None, drain_s=1.5,
            incident_url=f"{url}/incident", name="live-connection-leak"))

    cap = threading.Thread(target=capture)
    cap.start()
    try:
        time.sleep(0.3)
        traffic = threading.Thread(target=run_traffic, kwargs={
            "url": url, "rps": 40, "duration_s": 4.2, "concurrency": 8})
        traffic.start()
        time.sleep(1.5)
        requests.post(f"{url}/incident", json={"mode": "connection_leak"}, timeout=5)
        time.sleep(1.5)
        requests.post(f"{url}/incident", json={"mode": "normal"}, timeout=5)
        traffic.join(timeout=30)
        cap.join(timeout=60)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    incident, problems = result["out"]  # type: ignore[misc]
    assert problems == []
    truth = incident.truth
    assert (truth.root_cause_component, truth.root_cause_kind) == (
        "payment-service", "connection_leak")
    assert truth.onset_ms is not None and 1000 <= truth.onset_ms <= 3000
    assert truth.recovery_ms is not None and truth.recovery_ms > truth.onset_ms

    spans = {(bytes(t.trace_id[i]).hex(), bytes(t.span_id[i]).hex()): (t.name[i], t.events[i])
             for t in incident.span_tables for i in range(len(t))}
    timeouts = [name for name, events in spans.values() if name == "connect" and any(
        dict(e.attributes).get("exception.type") == "sqlalchemy.exc.TimeoutError"
        for e in events)]
    assert timeouts, "no connect span with the real TimeoutError"
    errors = [(line, meta) for _, line, meta in error_records(incident)]
    assert errors and all("QueuePool limit of size 5 overflow 10" in line for line, _ in errors)
    assert all((m["trace_id"], m["span_id"]) in spans for _, m in errors)
    _logs_as_generated(incident)
    timeout_series = [s for s in incident.series
                      if s.name == "db_client_connection_timeouts_total"]
    assert timeout_series and timeout_series[0].values[-1] >= len(errors) > 0
    assert any(s.name == "http_server_request_duration_seconds_count"
               and s.label("http_response_status_code") == "500" for s in incident.series)

    out = tmp_path / "live.jsonl.gz"
    write_recording(incident, out)
    assert read_recording(out).sample_count == incident.sample_count
    with running_prometheus(tmp_path / "prom") as prom:
        r = CliRunner().invoke(cli, ["load", str(out), "--signals", "metrics",
                                     "--prometheus-url", prom])
        assert r.exit_code == 0, r.output


def _logs_as_generated(live) -> None:  # type: ignore[no-untyped-def]
    """Log parity: the records live_app exported (as capture stores them, which is how Loki
    stores OTLP records) have the stream labels, fields, line forms and exception types of
    the generated ones."""
    gen = cached_incident("connection_leak")
    label_keys = {tuple(dict(s.labels)) for s in live.log_streams
                  if dict(s.labels).get("service_name") == "payment-service"}
    assert label_keys == {tuple(dict(s.labels)) for s in gen.log_streams
                          if dict(s.labels).get("service_name") == "payment-service"}

    def kinds(inc) -> dict[str, tuple[set[str], set[str]]]:  # type: ignore[no-untyped-def]
        out: dict[str, tuple[set[str], set[str]]] = {}
        for _, _line, meta in app_records(inc):
            keys, types = out.setdefault(meta["scope_name"], (set(), set()))
            keys.add(",".join(sorted(meta)))
            types.add(meta.get("exception_type", ""))
        return out

    live_kinds, gen_kinds = kinds(live), kinds(gen)
    assert live_kinds["uvicorn.access"] == gen_kinds["uvicorn.access"]
    assert live_kinds["payment_service.routes"] == gen_kinds["payment_service.routes"]
    access = re.compile(r'[\d.]+:\d+ - "(GET|POST) /\S* HTTP/1\.1" \d{3}')
    for inc in (live, gen):
        lines = [line for _, line, m in app_records(inc) if m["scope_name"] == "uvicorn.access"]
        assert lines and all(access.fullmatch(line) for line in lines)
