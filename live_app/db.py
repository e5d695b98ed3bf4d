"""The database: SQLAlchemy 2 engine with a real QueuePool, the payments table, queries.

SQLite (a file, the embedded default) or PostgreSQL when DATABASE_URL says so. The slow
query of the slow_query incident is genuinely slow in the database: PostgreSQL runs
``pg_sleep`` inside the statement; SQLite gets a ``pg_sleep`` function of the same name.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from sqlalchemy import (
    Engine,
    Index,
    Numeric,
    String,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import QueuePool

from .settings import Settings


class Base(DeclarativeBase):
    pass


class Payment(Base):
    __tablename__ = "payments"
    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column()

    __table_args__ = (Index("ix_payments_idempotency_key", "idempotency_key"),)


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    kwargs: dict[str, object] = {"poolclass": QueuePool, "pool_size": settings.pool_size,
                                 "max_overflow": settings.max_overflow,
                                 "pool_timeout": settings.pool_timeout_s}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_functions)
    return engine


def _sqlite_functions(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    def pg_sleep(seconds: float) -> None:
        time.sleep(float(seconds))

    dbapi_connection.create_function("pg_sleep", 1, pg_sleep)


def create_schema(engine: Engine) -> None:
    Base.metadata.create_all(engine)


def _lookup_sql(dialect: str, slow: bool) -> str:
    base = ("SELECT payments.id, payments.status, payments.amount FROM payments "
            "WHERE payments.idempotency_key = :key")
    if not slow:
        return base
    if dialect == "postgresql":
        # an uncorrelated EXISTS is a one-time filter: the sleep runs before the scan
        return base + " AND EXISTS (SELECT 1 FROM pg_sleep(:delay))"
    # SQLite: a branch without FROM evaluates its WHERE exactly once
    return (base + " UNION ALL SELECT NULL, NULL, NULL WHERE pg_sleep(:delay) IS NOT NULL")


def find_by_key(conn: Connection, key: str, slow_s: float = 0.0) -> tuple | None:
    sql = _lookup_sql(conn.dialect.name, slow_s > 0)
    params: dict[str, object] = {"key": key}
    if slow_s > 0:
        params["delay"] = slow_s
    for row in conn.execute(text(sql), params):
        if row[0] is not None:
            return tuple(row)
    return None


def insert_payment(conn: Connection, key: str, amount: Decimal, currency: str) -> int:
    row = conn.execute(
        Payment.__table__.insert().returning(Payment.__table__.c.id),  # type: ignore[attr-defined]
        {"idempotency_key": key, "amount": amount, "currency": currency, "status": "captured",
         "created_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)})
    return int(row.scalar_one())


def get_payment(conn: Connection, payment_id: int) -> dict[str, object] | None:
    row = conn.execute(text(
        "SELECT payments.id, payments.status, payments.amount, payments.currency, "
        "payments.created_at FROM payments WHERE payments.id = :id"), {"id": payment_id}).first()
    if row is None:
        return None
    return {"id": row[0], "status": row[1], "amount": str(row[2]), "currency": row[3],
            "created_at": str(row[4])}


def count_payments(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM payments")).scalar_one())


@contextmanager
def hold_connections(engine: Engine, count: int) -> Iterator[list[Connection]]:
    """Check out ``count`` connections inside open transactions (a leak, for the incident)."""
    held: list[Connection] = []
    try:
        for _ in range(count):
            conn = engine.connect()
            conn.begin()
            conn.execute(text("SELECT 1"))
            held.append(conn)
        yield held
    finally:
        for conn in held:
            conn.rollback()
            conn.close()
