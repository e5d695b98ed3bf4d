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
                        pool_timeout_s=0.5, slow_query_s=0.6, leak_ratio=1.0)
    with TestClient(create_app(settings), raise_server_exceptions=False,
                    client=("127.0.0.1", 50000)) as c:
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


def test_slow_query_is_slow_in_postgres_itself(client: TestClient,
                                               postgres: tuple[str, Path]) -> None:
    client.post("/incident", json={"mode": "slow_query"})
    t = time.perf_counter()
    assert client.post("/payment", json={"amount": 1}).status_code == 200
    assert time.perf_counter() - t >= 0.6
    # the server itself logged the statement as slow (log_min_duration_statement = 500 ms)
    log = postgres[1].read_text()
    slow = [line for line in log.splitlines() if "duration:" in line and "payments" in line]
    assert slow and float(slow[-1].split("duration: ")[1].split(" ms")[0]) >= 600
    client.post("/incident", json={"mode": "normal"})
    t = time.perf_counter()
    assert client.post("/payment", json={"amount": 1}).status_code == 200
    assert time.perf_counter() - t < 0.6


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
