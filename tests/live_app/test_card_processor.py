"""card-processor: a service of its own that payment-service calls over HTTP, and that
error_spike and upstream_latency make fail or slow down."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from live_app.app import create_app
from live_app.card_processor import (
    Behaviour,
    CardSettings,
    EmbeddedCardProcessor,
    create_card_processor,
)
from live_app.settings import Settings, SettingsError

from .conftest import client_for, serving


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_answer_times_follow_the_mode() -> None:
    clock = Clock()
    b = Behaviour(CardSettings(p50_ms=12.0, slow_ms=2400.0, ramp_s=60.0, error_ratio=0.3),
                  random.Random(7), clock)
    calm = [b.next_charge() for _ in range(4000)]
    assert not any(failed for _, failed in calm)
    assert statistics.median(t for t, _ in calm) == pytest.approx(0.012, rel=0.05)
    b.set("error_spike")
    shed = [b.next_charge() for _ in range(4000)]
    share = sum(failed for _, failed in shed) / len(shed)
    assert share == pytest.approx(0.3, abs=0.03)
    assert statistics.median(t for t, failed in shed if failed) < 0.006  # shed quickly
    b.set("upstream_latency")  # the ramp starts now: geometric from 12 ms to 2.4 s
    assert b.median_s() == pytest.approx(0.012)
    clock.t += 30
    assert b.median_s() == pytest.approx(math.sqrt(0.012 * 2.4))
    clock.t += 300
    assert b.median_s() == pytest.approx(2.4)
    assert not any(b.next_charge()[1] for _ in range(500))  # slower, never failing
    b.set("normal")
    assert b.median_s() == pytest.approx(0.012)


def test_bad_settings_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="CARD_MODE='broken'"):
        CardSettings.from_env({"CARD_MODE": "broken"})
    with pytest.raises(SettingsError, match="CARD_P50_MS='fast' is not a number"):
        CardSettings.from_env({"CARD_P50_MS": "fast"})
    with pytest.raises(SettingsError, match="CARD_ERROR_RATIO"):
        CardSettings(error_ratio=1.5)


def test_charges_and_its_own_metrics() -> None:
    app = create_card_processor(CardSettings(p50_ms=1.0), random.Random(1))
    with TestClient(app, client=("127.0.0.1", 50000), base_url="http://127.0.0.1") as c:
        r = c.post("/v1/charges", json={"amount": "12.50", "currency": "EUR"})
        assert r.status_code == 201 and r.json()["status"] == "succeeded"
        assert r.json()["amount"] == "12.50"
        assert c.post("/incident", json={"mode": "upstream_latency"}).json() == {
            "mode": "upstream_latency"}
        assert c.post("/incident", json={"mode": "slow_query"}).status_code == 422
        metrics = c.get("/metrics").text
    served = [line for line in metrics.splitlines()
              if line.startswith("http_server_request_duration_seconds_count{")]
    assert len(served) == 1 and 'http_route="/v1/charges"' in served[0]
    assert 'http_response_status_code="201"' in served[0] and served[0].endswith(" 1.0")
    assert "process_cpu_seconds_total" in metrics


def test_the_switch_is_refused_from_elsewhere_without_the_token() -> None:
    app = create_card_processor(CardSettings(incident_token="secret"))
    with TestClient(app, client=("10.1.2.3", 50000)) as c:
        assert c.post("/incident", json={"mode": "error_spike"}).status_code == 403
        ok = c.post("/incident", json={"mode": "error_spike"},
                    headers={"X-Incident-Token": "secret"})
        assert ok.json() == {"mode": "error_spike"}


def _spans(app) -> InMemorySpanExporter:  # type: ignore[no-untyped-def]
    mem = InMemorySpanExporter()
    app.state.telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(mem))
    return mem


def test_a_payment_charges_over_http_in_one_trace(settings: Settings) -> None:
    app = create_app(settings)
    mem = _spans(app)
    with TestClient(app, client=("127.0.0.1", 50000), base_url="http://127.0.0.1") as c:
        card_mem = _spans(app.state.card.embedded.app)  # type: ignore[attr-defined]
        assert c.post("/payment", json={"amount": "10.00"}).status_code == 200
        metrics = c.get("/metrics").text
    client = [s for s in mem.get_finished_spans()
              if s.instrumentation_scope.name == "opentelemetry.instrumentation.httpx"]
    assert len(client) == 1 and client[0].name == "POST"
    attrs = dict(client[0].attributes or {})
    assert attrs["url.full"].endswith("/v1/charges") and attrs["http.response.status_code"] == 201
    server = [s for s in card_mem.get_finished_spans() if s.name == "POST /v1/charges"]
    assert len(server) == 1
    # the card processor's span is the child of payment-service's client span
    assert server[0].context.trace_id == client[0].context.trace_id
    assert server[0].parent is not None and server[0].parent.span_id == client[0].context.span_id
    assert dict(server[0].resource.attributes)["service.name"] == "card-processor"
    assert dict(client[0].resource.attributes)["service.name"] == "payment-service"
    assert any(line.startswith("http_client_request_duration_seconds_count{")
               and 'http_response_status_code="201"' in line for line in metrics.splitlines())


def test_error_spike_is_the_card_processors_503(client: TestClient) -> None:
    """The switch reaches the card processor; payments fail because it answers 503, with
    the message and client span the generator prints."""
    assert client.post("/incident", json={"mode": "error_spike"}).json() == {
        "mode": "error_spike"}
    card = client.app.state.card  # type: ignore[attr-defined]
    assert requests.get(f"{card.url}/incident", timeout=5).json()["mode"] == "error_spike"
    r = client.post("/payment", json={"amount": "10.00"})
    assert r.status_code == 500
    metrics = client.get("/metrics").text
    failed = [line for line in metrics.splitlines()
              if line.startswith("http_client_request_duration_seconds_count{")
              and 'http_response_status_code="503"' in line]
    assert failed and 'error_type="503"' in failed[0]
    # reads never call the card processor: they still succeed
    assert client.get("/payments/1").status_code in (200, 404)
    assert client.post("/incident", json={"mode": "normal"}).json() == {"mode": "normal"}
    assert requests.get(f"{card.url}/incident", timeout=5).json()["mode"] == "normal"
    assert client.post("/payment", json={"amount": "10.00"}).status_code == 200


def test_upstream_latency_slows_payments_not_reads(settings: Settings, tmp_path: Path) -> None:
    card = EmbeddedCardProcessor(CardSettings(slow_ms=400.0, ramp_s=0.0, sigma=0.0))
    try:
        s = replace(settings, database_url=f"sqlite:///{tmp_path / 'up.db'}",
                    card_processor_url=card.url)
        with serving(s) as url:
            created = requests.post(f"{url}/payment", json={"amount": "1.00"}, timeout=5)
            assert created.status_code == 200
            assert requests.post(f"{url}/incident", json={"mode": "upstream_latency"},
                                 timeout=5).status_code == 200
            assert card.app.state.behaviour.mode == "upstream_latency"
            slow = requests.post(f"{url}/payment", json={"amount": "1.00"}, timeout=10)
            read = requests.get(f"{url}/payments/{created.json()['id']}", timeout=10)
        assert slow.status_code == 200 and slow.elapsed.total_seconds() >= 0.4
        assert read.status_code == 200 and read.elapsed.total_seconds() < 0.4
    finally:
        card.stop()


def test_an_unreachable_card_processor_fails_payments_clearly(settings: Settings,
                                                             tmp_path: Path) -> None:
    from tests.integration.prometheus_server import free_port

    s = replace(settings, database_url=f"sqlite:///{tmp_path / 'gone.db'}",
                card_processor_url=f"http://127.0.0.1:{free_port()}")
    with client_for(s) as c:
        assert c.post("/payment", json={"amount": "1.00"}).status_code == 500
        switch = c.post("/incident", json={"mode": "error_spike"})
        assert switch.status_code == 502
        assert "could not be switched to error_spike" in switch.json()["detail"]
        assert c.get("/incident").json()["mode"] == "normal"
