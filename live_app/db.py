"""The database: SQLAlchemy 2 engine with a real QueuePool, the payments table, queries.

SQLite (a file, the embedded default) or PostgreSQL when DATABASE_URL says so. The
slow_query incident is a dropped index, for real: the lookup by idempotency key (the same
statement text throughout) becomes a sequential scan over the seeded rows.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    Engine,
    Index,
    Numeric,
    String,
    create_engine,
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


LOOKUP_INDEX = "ix_payments_idempotency_key"


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    kwargs: dict[str, object] = {"poolclass": QueuePool, "pool_size": settings.pool_size,
                                 "max_overflow": settings.max_overflow,
                                 "pool_timeout": settings.pool_timeout_s,
                                 "pool_recycle": settings.pool_recycle_s}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    elif url.startswith("postgresql"):  # how pg_stat_activity names the service's sessions
        kwargs["connect_args"] = {"application_name": "payment-service"}
    return create_engine(url, **kwargs)


def create_schema(engine: Engine, seed_rows: int = 0) -> None:
    """The table and its index (again, if an incident dropped it and the app stopped), and
    at least ``seed_rows`` payments: enough history that a scan without the index costs."""
    Base.metadata.create_all(engine)
    restore_lookup_index(engine)
    if seed_rows <= 0:
        return
    with engine.begin() as conn:
        have = int(conn.execute(text("SELECT count(*) FROM payments")).scalar_one())
        missing = seed_rows - have
        if missing <= 0:
            return
        if conn.dialect.name == "postgresql":
            conn.execute(text(
                "INSERT INTO payments (idempotency_key, amount, currency, status, created_at) "
                "SELECT 'seed-' || g, 10.00 + g % 500, 'EUR', 'captured', "
                "now() - g * interval '1 second' FROM generate_series(1, :n) AS g"),
                {"n": missing})
        else:
            conn.execute(text(
                "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < :n) "
                "INSERT INTO payments (idempotency_key, amount, currency, status, created_at) "
                "SELECT 'seed-' || g, 10.00 + g % 500, 'EUR', 'captured', "
                "datetime('now', '-' || g || ' seconds') FROM s"), {"n": missing})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE payments"))


def drop_lookup_index(engine: Engine) -> None:
    """The slow_query incident: a migration drops the index the lookup by key uses."""
    with engine.begin() as conn:
        conn.execute(text(f"DROP INDEX IF EXISTS {LOOKUP_INDEX}"))


def restore_lookup_index(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"CREATE INDEX IF NOT EXISTS {LOOKUP_INDEX} ON payments "
                          "(idempotency_key)"))


def find_by_key(conn: Connection, key: str) -> tuple | None:
    row = conn.execute(text(
        "SELECT payments.id, payments.status, payments.amount FROM payments "
        "WHERE payments.idempotency_key = :key"), {"key": key}).first()
    return None if row is None else tuple(row)


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
