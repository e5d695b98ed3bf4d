"""Every route and incident mode of live_app with FastAPI's TestClient, on SQLite."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from live_app import db
from live_app.settings import MODES, Settings, SettingsError

from .conftest import client_for


def payments(client: TestClient) -> int:
    return db.count_payments(client.app.state.engine)  # type: ignore[attr-defined]


def test_create_read_and_idempotency(client: TestClient) -> None:
    r = client.post("/payment", json={"amount": "12.50", "idempotency_key": "k-1"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "captured" and body["amount"] == "12.50"
    again = client.post("/payment", json={"amount": "12.50", "idempotency_key": "k-1"})
    assert again.json()["id"] == body["id"] and payments(client) == 1
    got = client.get(f"/payments/{body['id']}")
    assert got.status_code == 200 and got.json()["currency"] == "EUR"
    missing = client.get("/payments/424242")
    assert missing.status_code == 404 and "424242 not found" in missing.json()["detail"]
    assert client.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize("payload, fragment", [
    ({}, "amount"), ({"amount": -5}, "greater than 0"), ({"amount": 0}, "greater than 0"),
    ({"amount": "ten"}, "amount"), ({"amount": 5, "currency": "euro"}, "currency"),
])
def test_bad_payments_get_422_and_write_nothing(client: TestClient, payload: dict,
                                                fragment: str) -> None:
    r = client.post("/payment", json=payload)
    assert r.status_code == 422
    assert fragment in r.text
    assert payments(client) == 0


def test_incident_switch_and_its_guards(settings: Settings) -> None:
    with client_for(settings, host="10.1.2.3") as remote:
        denied = remote.post("/incident", json={"mode": "slow_query"})
        assert denied.status_code == 403 and "INCIDENT_TOKEN" in denied.json()["detail"]
        was = remote.get("/incident").json()["since"]
        t0 = time.time()
        ok = remote.post("/incident", json={"mode": "slow_query"},
                         headers={"X-Incident-Token": "let-me-in"})
        now = remote.get("/incident").json()
        assert ok.status_code == 200 and now["mode"] == "slow_query"
        # since when the fault is in place: after the index was dropped, by the app's clock
        assert was <= t0 <= now["since"] <= time.time()
    with client_for(settings) as local:
        bad = local.post("/incident", json={"mode": "meltdown"})
        assert bad.status_code == 422
        assert all(m in bad.json()["detail"] for m in MODES)
        assert local.get("/incident").json()["mode"] == "normal"


def _lookup_plan(client: TestClient) -> str:
    """SQLite's plan for the lookup by key, on a connection of its own (a pooled one can
    keep a statement prepared before the index went)."""
    import sqlite3

    path = client.app.state.engine.url.database  # type: ignore[attr-defined]
    with sqlite3.connect(path) as conn:
        return " ".join(str(r[-1]) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT payments.id FROM payments "
            "WHERE payments.idempotency_key = 'k'"))


def test_slow_query_drops_the_lookup_index_and_restores_it(settings: Settings) -> None:
    with client_for(replace(settings, seed_rows=2000)) as client:
        _drop_and_restore(client)


def _drop_and_restore(client: TestClient) -> None:
    assert "INDEX ix_payments_idempotency_key" in _lookup_plan(client)
    assert payments(client) >= 2000  # seeded history for the scan to read
    client.post("/incident", json={"mode": "slow_query"})
    assert _lookup_plan(client).startswith("SCAN payments")
    assert client.post("/payment", json={"amount": 1}).status_code == 200
    client.post("/incident", json={"mode": "normal"})
    assert "INDEX ix_payments_idempotency_key" in _lookup_plan(client)
    assert client.get("/health").status_code == 200


def test_connection_leak_times_out_for_real_then_recovers(settings: Settings,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with client_for(replace(settings, leak_ratio=1.0)) as client:
        _leak_then_time_out(client, caplog)


def _leak_then_time_out(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    client.post("/incident", json={"mode": "connection_leak"})
    # every payment succeeds and leaks one connection, until the pool (5 + 10) is empty
    assert [client.post("/payment", json={"amount": 3}).status_code
            for _ in range(15)] == [200] * 15
    leaked = client.get("/metrics").text
    used = [line for line in leaked.splitlines()
            if line.startswith("db_client_connections_usage_connections{")
            and 'state="used"' in line]
    assert used and float(used[0].rsplit(" ", 1)[1]) == 15.0
    r = client.post("/payment", json={"amount": 3})
    assert r.status_code == 500 and r.text == "Internal Server Error"
    assert client.get("/payments/1").status_code == 500
    errors = [rec for rec in caplog.records if rec.levelname == "ERROR"]
    assert errors and "sqlalchemy.exc.TimeoutError: QueuePool limit of size 5 overflow 10 " \
        "reached, connection timed out, timeout 0.30" in errors[0].getMessage()
    assert len(errors[0].otelTraceID) == 32 and errors[0].otelTraceID != "0" * 32
    metrics = client.get("/metrics").text
    assert "db_client_connection_timeouts_total" in metrics
    timeouts = [line for line in metrics.splitlines()
                if line.startswith("db_client_connection_timeouts_total{")]
    assert float(timeouts[0].rsplit(" ", 1)[1]) == 2.0
    client.post("/incident", json={"mode": "normal"})
    assert client.post("/payment", json={"amount": 3}).status_code == 200


def test_pool_exhaustion_holds_each_connection_through_a_slow_call(settings: Settings) -> None:
    with client_for(replace(settings, hold_s=0.5)) as client:
        client.post("/incident", json={"mode": "pool_exhaustion"})
        t = time.perf_counter()
        assert client.post("/payment", json={"amount": 3}).status_code == 200
        # log-normal around 0.5 s (sigma 0.3): below 0.15 s once in 30,000 payments
        assert time.perf_counter() - t >= 0.15
        t = time.perf_counter()
        assert client.get("/payments/1").status_code == 200  # only payments make the call
        assert time.perf_counter() - t < 0.15


def test_error_spike_fails_payments(client: TestClient) -> None:
    client.post("/incident", json={"mode": "error_spike"})
    r = client.post("/payment", json={"amount": 3})
    assert r.status_code == 500
    assert payments(client) == 0
    client.post("/incident", json={"mode": "normal"})
    assert client.post("/payment", json={"amount": 3}).status_code == 200


def test_startup_mode_from_settings(settings: Settings) -> None:
    from dataclasses import replace

    with client_for(replace(settings, incident_mode="error_spike")) as c:
        assert c.get("/incident").json()["mode"] == "error_spike"


def test_settings_from_env_validate() -> None:
    s = Settings.from_env({"DATABASE_URL": "sqlite:///x.db", "POOL_SIZE": "2",
                           "INCIDENT_MODE": "slow_query"})
    assert (s.pool_size, s.incident_mode, s.otlp_endpoint) == (2, "slow_query", None)
    with pytest.raises(SettingsError, match="INCIDENT_MODE"):
        Settings.from_env({"INCIDENT_MODE": "chaos"})
    with pytest.raises(SettingsError, match="POOL_TIMEOUT"):
        Settings.from_env({"POOL_TIMEOUT": "soon"})


def test_metrics_endpoint_serves_this_apps_registry(client: TestClient) -> None:
    client.post("/payment", json={"amount": 3})
    text = client.get("/metrics").text
    for name in ("http_server_request_duration_seconds_bucket", "http_requests_total",
                 "db_client_connections_usage_connections", "process_resident_memory_bytes",
                 "target_info", "db_client_connection_max"):
        assert f"\n{name}" in text or text.startswith(name), name


def test_per_signal_otlp_endpoints() -> None:
    s = Settings.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4317",
                           "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://loki:3100/otlp/v1/logs",
                           "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf"})
    assert s.exporter("traces") == ("http://tempo:4317", "grpc", True)
    assert s.exporter("logs") == ("http://loki:3100/otlp/v1/logs", "http/protobuf", True)
    assert Settings.from_env({}).exporter("traces") is None
    shared = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert shared.exporter("logs") == ("http://c:4318", "http/protobuf", False)
    with pytest.raises(SettingsError, match="TRACES_PROTOCOL"):
        Settings.from_env({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "carrier-pigeon"})


def test_postgres_faults_are_refused_on_sqlite_and_match_the_generators_texts(
        settings: Settings) -> None:
    from generator import texts
    from live_app import incidents

    assert (incidents.HOLDER_SQL, incidents.MIGRATION_SQL, incidents.REPORT_SQL) == (
        texts.HOLDER_SQL, texts.MIGRATION_SQL, texts.REPORT_SQL)
    with client_for(settings) as c:
        for mode in ("lock_contention", "too_many_clients", "noisy_neighbour"):
            r = c.post("/incident", json={"mode": mode})
            assert r.status_code == 422 and "postgresql DATABASE_URL" in r.json()["detail"]
        assert c.get("/incident").json()["mode"] == "normal"


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:8000", True), ("localhost", True), ("LOCALHOST:8000", True), ("[::1]:8000", True),
    ("rebind.attacker.example", False), ("rebind.attacker.example:8000", False),
    ("127.0.0.1.nip.io", False),
])
def test_loopback_switch_needs_a_loopback_host(settings: Settings, host: str,
                                               allowed: bool) -> None:
    """DNS rebinding: a page whose name resolves to 127.0.0.1 reaches the switch from the
    user's browser, from loopback, with its own name in Host. Only the token gets past."""
    with client_for(settings) as local:
        r = local.post("/incident", json={"mode": "slow_query"}, headers={"Host": host})
        assert (r.status_code == 200) is allowed, (r.status_code, r.text)
        if not allowed:
            detail = r.json()["detail"]
            assert "loopback Host" in detail and host in detail and "X-Incident-Token" in detail
            ok = local.post("/incident", json={"mode": "normal"},
                            headers={"Host": host, "X-Incident-Token": "let-me-in"})
            assert ok.status_code == 200


def test_the_card_switch_forwards_the_incident_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """In compose, card-processor sees payment-service's container address, not loopback:
    the forwarded switch must carry INCIDENT_TOKEN or it is refused."""
    import httpx

    from live_app.app import CardClient

    sent: list[dict] = []

    def post(url: str, **kw: object) -> httpx.Response:
        sent.append({"url": url, **kw})
        return httpx.Response(200, json={"mode": "error_spike"})

    class Tel:
        tracer_provider = meter_provider = None

    monkeypatch.setattr(httpx, "post", post)
    CardClient("http://card-processor:8080", Tel(), token="s3cret").switch("error_spike")
    CardClient("http://card-processor:8080", Tel()).switch("slow_query")
    assert sent[0]["url"] == "http://card-processor:8080/incident"
    assert sent[0]["headers"] == {"X-Incident-Token": "s3cret"}
    assert sent[0]["json"] == {"mode": "error_spike"}
    assert sent[1]["headers"] is None and sent[1]["json"] == {"mode": "normal"}
