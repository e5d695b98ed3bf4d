"""live_app against a real PostgreSQL 15 (Debian package), started per test module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from live_app.app import create_app
from live_app.settings import Settings

from .postgres_server import running_postgres

pytestmark = pytest.mark.integration


SEED_ROWS = 200_000


@pytest.fixture(scope="module")
def postgres() -> Iterator[tuple[str, Path]]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def database_url(postgres: tuple[str, Path]) -> str:
    return postgres[0]


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, pool_size=2, max_overflow=1,
                        pool_timeout_s=0.5, seed_rows=SEED_ROWS, leak_ratio=1.0)
    with TestClient(create_app(settings), raise_server_exceptions=False,
                    client=("127.0.0.1", 50000), base_url="http://127.0.0.1") as c:
        yield c


def test_normal_payments_are_stored_in_postgres(client: TestClient, database_url: str) -> None:
    r = client.post("/payment", json={"amount": "42.00", "idempotency_key": "pg-1"})
    assert r.status_code == 200
    engine = create_engine(database_url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT amount, currency FROM payments "
                                "WHERE idempotency_key = 'pg-1'")).one()
    engine.dispose()
    assert (str(row[0]), row[1]) == ("42.00", "EUR")


def _plan_and_scans(url: str) -> tuple[str, int]:
    """How PostgreSQL would run the lookup by key now, and rows read by scans so far."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            plan = "\n".join(r[0] for r in conn.execute(text(
                "EXPLAIN SELECT payments.id, payments.status, payments.amount FROM payments "
                "WHERE payments.idempotency_key = 'k'")))
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            read = conn.execute(text("SELECT seq_tup_read FROM pg_stat_user_tables "
                                     "WHERE relname = 'payments'")).scalar_one()
        return plan, int(read)
    finally:
        engine.dispose()


def test_slow_query_drops_the_index_for_real(client: TestClient, database_url: str) -> None:
    """No sleep in the statement: the migration drops the index, so PostgreSQL itself
    switches the same lookup to a sequential scan over every seeded row, and back."""
    before, _ = _plan_and_scans(database_url)
    assert "Index" in before and "Seq Scan" not in before
    client.post("/incident", json={"mode": "slow_query"})
    during, read0 = _plan_and_scans(database_url)
    assert "Seq Scan on payments" in during
    assert [client.post("/payment", json={"amount": 1}).status_code
            for _ in range(3)] == [200] * 3
    deadline = time.monotonic() + 10  # the statistics collector reports within a moment
    while (read := _plan_and_scans(database_url)[1]) - read0 < 3 * SEED_ROWS:
        assert time.monotonic() < deadline, (read, read0)
        time.sleep(0.2)
    client.post("/incident", json={"mode": "normal"})
    after, _ = _plan_and_scans(database_url)
    assert "Index" in after and "Seq Scan" not in after


def test_connection_leak_real_timeout_then_recovery(client: TestClient, database_url: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    client.post("/incident", json={"mode": "connection_leak"})
    # each payment leaks one connection in an open transaction, until the pool (2 + 1) is empty
    assert [client.post("/payment", json={"amount": 1}).status_code
            for _ in range(3)] == [200] * 3
    assert _idle_in_transaction(database_url) == 3  # PostgreSQL sees the leaked sessions
    r = client.post("/payment", json={"amount": 1})
    assert r.status_code == 500
    messages = [rec.getMessage() for rec in caplog.records if rec.levelname == "ERROR"]
    assert any("sqlalchemy.exc.TimeoutError: QueuePool limit of size 2 overflow 1 reached"
               in m for m in messages)
    client.post("/incident", json={"mode": "normal"})
    assert _idle_in_transaction(database_url) == 0
    assert client.post("/payment", json={"amount": 1}).status_code == 200


def _idle_in_transaction(url: str) -> int:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                "AND datname = current_database()")).scalar_one())
    finally:
        engine.dispose()


def _activity(url: str, where: str) -> int:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sqlalchemy.text(
                f"SELECT count(*) FROM pg_stat_activity WHERE {where}")).scalar_one())
    finally:
        engine.dispose()


def test_lock_contention_queues_payments_behind_a_real_migration(client: TestClient,
                                                                 database_url: str) -> None:
    import concurrent.futures

    assert client.post("/payment", json={"amount": 1}).status_code == 200
    r = client.post("/incident", json={"mode": "lock_contention"})
    assert r.status_code == 200 and client.get("/incident").json()["since"] is not None
    assert _activity(database_url, "application_name = 'psql' AND state = "
                                   "'idle in transaction'") == 1
    assert _activity(database_url, "application_name = 'alembic' AND wait_event_type = "
                                   "'Lock'") == 1
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.post, "/payment", json={"amount": 2})
        # the payment waits in the database, behind the migration, holding its connection
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _activity(
                database_url, "application_name = 'payment-service' AND wait_event_type = "
                              "'Lock'"):
            time.sleep(0.05)
        assert not pending.done()
        assert _activity(database_url, "application_name = 'payment-service' AND "
                                       "wait_event_type = 'Lock'") == 1
        assert client.get("/health").status_code == 200  # operational endpoints answer
        client.post("/incident", json={"mode": "normal"})
        assert pending.result(timeout=30).status_code == 200
    assert _activity(database_url, "application_name IN ('psql', 'alembic')") == 0
    engine = create_engine(database_url)
    with engine.connect() as conn:  # the migration was rolled back
        cols = conn.execute(text("SELECT column_name FROM information_schema.columns WHERE "
                                 "table_name = 'payments'")).scalars().all()
    engine.dispose()
    assert "refund_reason" not in cols


def test_too_many_clients_refuses_the_service_new_connections(database_url: str,
                                                             caplog: pytest.LogCaptureFixture,
                                                             ) -> None:
    settings = Settings(database_url=database_url, pool_size=2, max_overflow=1,
                        pool_timeout_s=0.5)
    with TestClient(create_app(settings), raise_server_exceptions=False,
                    client=("127.0.0.1", 50000), base_url="http://127.0.0.1") as c:
        assert c.post("/payment", json={"amount": 1}).status_code == 200  # one connection open

        assert c.post("/incident", json={"mode": "too_many_clients"}).status_code == 200
        engine = c.app.state.engine  # type: ignore[attr-defined]
        with engine.connect() as own:  # the service's one open connection is busy: the next
            # request needs a new one, and PostgreSQL has no slot left (the test asks on it:
            # a connection of its own would be refused too)
            hogged = own.execute(text("SELECT count(*) FROM pg_stat_activity WHERE "
                                      "application_name = 'batch-export'")).scalar_one()
            assert hogged > 10
            r = c.post("/payment", json={"amount": 1})
            assert r.status_code == 500
            assert c.get("/payments/1").status_code == 500
        errors = [rec.getMessage() for rec in caplog.records if rec.levelname == "ERROR"]
        assert any("sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection "
                   "failed" in m and ("remaining connection slots are reserved" in m
                                      or "too many clients already" in m) for m in errors)
        assert c.get("/metrics").status_code == 200 and c.get("/health").status_code == 200
        assert c.post("/payment", json={"amount": 1}).status_code == 200  # the one it holds
        c.post("/incident", json={"mode": "normal"})
        with engine.connect():
            assert c.post("/payment", json={"amount": 1}).status_code == 200
    assert _activity(database_url, "application_name = 'batch-export'") == 0


def test_noisy_neighbour_runs_real_reports_that_spill_to_disk(client: TestClient,
                                                            database_url: str) -> None:
    def temp_files() -> int:
        return _activity(database_url, "false") + int(_scalar(
            database_url, "SELECT temp_files FROM pg_stat_database WHERE datname = "
                          "current_database()"))

    before = temp_files()
    assert client.post("/incident", json={"mode": "noisy_neighbour"}).status_code == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and temp_files() <= before:
        time.sleep(0.2)
    assert temp_files() > before  # the reports' sorts spilled, as PostgreSQL counts them
    # two sessions (their parallel workers carry the name too, as backend_type says)
    assert _activity(database_url, "application_name = 'metabase' AND backend_type = "
                                   "'client backend'") == 2
    assert client.post("/payment", json={"amount": 1}).status_code == 200  # slower, not failing
    client.post("/incident", json={"mode": "normal"})
    assert _activity(database_url, "application_name = 'metabase'") == 0


def _scalar(url: str, sql: str) -> object:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text(sql)).scalar_one()
    finally:
        engine.dispose()


def test_other_clients_are_not_traced_as_the_service(database_url: str) -> None:
    """The batch job, the analyst, the migration and the dashboard are other processes in
    production; in live_app they share the process whose SQLAlchemy instrumentation wraps
    Engine.connect for every engine. Their connections must not become payment-service's
    `connect` spans (the batch job makes thousands)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from live_app.incidents import _client

    app = create_app(Settings(database_url=database_url))
    spans = InMemorySpanExporter()
    app.state.telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    with TestClient(app, client=("127.0.0.1", 50000), base_url="http://127.0.0.1"):
        engine = app.state.engine

        def connects() -> int:
            return sum(1 for sp in spans.get_finished_spans() if sp.name == "connect")

        before = connects()
        with engine.connect():  # the service's own: traced
            pass
        assert connects() == before + 1
        other = _client(engine, "batch-export")
        with other.connect() as conn:
            assert conn.execute(text("SELECT current_setting('application_name')")
                                ).scalar_one() == "batch-export"
        with other.begin() as conn:
            conn.execute(text("SELECT 1"))
        other.dispose()
        assert connects() == before + 1
