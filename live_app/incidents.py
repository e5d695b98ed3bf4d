"""Incident modes, switchable at run time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy.exc
from opentelemetry.instrumentation.utils import suppress_instrumentation
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from .db import drop_lookup_index, restore_lookup_index
from .settings import MODES, POSTGRES_MODES, SettingsError

# the receipt lookup of the leaking code path (it opens a transaction and never ends it)
LEAK_SQL = "SELECT payments.id, payments.status FROM payments WHERE payments.id = :id"
# lock_contention: what the analyst read, and the migration that queues behind it (the
# generator prints the same texts: a unit test keeps them equal)
HOLDER_SQL = "SELECT count(*) FROM payments WHERE created_at > now() - interval '7 days'"
MIGRATION_SQL = "ALTER TABLE payments ADD COLUMN refund_reason text"
SLOTS_LIMIT = 2000  # too_many_clients: connections the batch job tries at most
# noisy_neighbour: the finance dashboard's report over ledger_entries (the generator prints
# the same text)
REPORT_SQL = ("SELECT date_trunc('day', ledger_entries.booked_at) AS day, "
              "ledger_entries.account_id, sum(ledger_entries.amount) AS total FROM "
              "ledger_entries GROUP BY 1, 2 ORDER BY total DESC")
LEDGER_ROWS = 400_000  # rows ledger_entries holds: enough that the report spills to disk


class _OtherClient:
    """Another client of the same database, under its own name. In production it is
    another process; here it shares payment-service's, whose SQLAlchemy instrumentation
    wraps Engine.connect for every engine: its connections are made with instrumentation
    suppressed, so they are not traced (nor counted) as payment-service's."""

    def __init__(self, engine: Engine, application_name: str) -> None:
        self.engine = create_engine(engine.url, poolclass=NullPool,
                                    connect_args={"application_name": application_name})

    def connect(self) -> Connection:
        with suppress_instrumentation():
            return self.engine.connect()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with suppress_instrumentation():
            conn = self.engine.connect()
        with conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def _client(engine: Engine, application_name: str) -> _OtherClient:
    return _OtherClient(engine, application_name)


class LockQueue:
    """lock_contention, for real: an analyst's psql session reads payments in a
    transaction and stays idle in it; a migration (alembic, no lock_timeout) then asks for
    an ACCESS EXCLUSIVE lock and waits behind it, and every statement on payments queues
    behind the migration. Ending it ends the analyst's transaction: the ALTER gets its lock,
    and is rolled back (the schema stays as it was)."""

    def __init__(self, engine: Engine) -> None:
        self.analyst = _client(engine, "psql").connect()
        self.analyst.execute(text(HOLDER_SQL))  # the transaction stays open, idle
        self._migration = _client(engine, "alembic")
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._migrate, name="alembic", daemon=True)
        self._thread.start()
        self._wait_until_queued(engine)

    def _migrate(self) -> None:
        try:
            with self._migration.connect() as conn:
                conn.execute(text("SET lock_timeout = 0"))
                conn.execute(text(MIGRATION_SQL))
                conn.rollback()
        except sqlalchemy.exc.SQLAlchemyError as exc:  # kept: end() reports it
            self.error = exc

    def _wait_until_queued(self, engine: Engine, limit_s: float = 10.0) -> None:
        deadline = time.monotonic() + limit_s
        with _client(engine, "payment-service-incident").connect() as conn:
            while time.monotonic() < deadline:
                waiting = conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'alembic' "
                    "AND wait_event_type = 'Lock'")).scalar_one()
                if waiting:
                    return
                time.sleep(0.05)
        self.end()
        raise SettingsError("lock_contention: the migration did not queue for its lock "
                            f"within {limit_s:g} s; is another session holding payments?")

    def end(self) -> float:
        """Ends the analyst's transaction; returns when that was (the fault is gone then:
        the queue behind it drains within milliseconds)."""
        self.analyst.rollback()
        gone = time.time()
        self.analyst.close()
        self._thread.join(timeout=60)
        self._migration.dispose()
        return gone


class Reports:
    """noisy_neighbour, for real: a finance dashboard (application_name metabase) runs its
    report over ledger_entries on two sessions, back to back, with a small work_mem so
    its sorts spill to temp files; payment-service shares the disk and the CPUs with it.
    Ending it cancels the running reports."""

    def __init__(self, engine: Engine, sessions: int = 2) -> None:
        self._engine = _client(engine, "metabase")
        self._stop = threading.Event()
        self.runs = 0
        self.error: BaseException | None = None
        with self._engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS ledger_entries (id bigserial "
                              "PRIMARY KEY, booked_at timestamptz NOT NULL, account_id int "
                              "NOT NULL, amount numeric(12, 2) NOT NULL)"))
            have = conn.execute(text("SELECT count(*) FROM ledger_entries")).scalar_one()
            if have < LEDGER_ROWS:
                conn.execute(text(
                    "INSERT INTO ledger_entries (booked_at, account_id, amount) SELECT "
                    "now() - g * interval '37 seconds', g % 5003, (g % 9973) / 100.0 FROM "
                    "generate_series(1, :n) AS g"), {"n": LEDGER_ROWS - have})
        self._threads = [threading.Thread(target=self._run, name=f"metabase-{k}", daemon=True)
                         for k in range(sessions)]
        for th in self._threads:
            th.start()

    def _run(self) -> None:
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SET work_mem = '64kB'"))
                while not self._stop.is_set():
                    try:
                        conn.execute(text(REPORT_SQL)).fetchall()
                        self.runs += 1
                    except sqlalchemy.exc.OperationalError:  # cancelled by end()
                        conn.rollback()
                    conn.commit()
        except sqlalchemy.exc.SQLAlchemyError as exc:  # kept for a test to read
            self.error = exc

    def end(self) -> None:
        self._stop.set()
        with self._engine.connect() as conn:
            conn.execute(text("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE "
                              "application_name = 'metabase' AND pid <> pg_backend_pid()"))
        for th in self._threads:
            th.join(timeout=30)
        self._engine.dispose()


class SlotHog:
    """too_many_clients, for real: a batch job's pool opens connections until PostgreSQL
    refuses one, keeps them, and its waiting workers take every slot that frees up (they
    retry every few milliseconds). payment-service can open no new connection: one it
    needs beyond those it holds is refused (and one pool_recycle replaces is refused too,
    when the job's workers take the freed slot first). Ending it closes them all."""

    def __init__(self, engine: Engine, retry_s: float = 0.005) -> None:
        self._engine = _client(engine, "batch-export")
        self.connections: list[Connection] = []
        self.refused = ""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        while len(self.connections) < SLOTS_LIMIT and self._grab():
            pass
        self._thread = threading.Thread(target=self._keep_taking, args=(retry_s,),
                                        name="batch-export", daemon=True)
        self._thread.start()

    def _grab(self) -> bool:
        try:
            conn = self._engine.connect()
        except sqlalchemy.exc.OperationalError as exc:  # the server is full: the point
            self.refused = str(exc.orig)
            return False
        with self._lock:
            if self._stop.is_set():
                conn.close()
                return False
            self.connections.append(conn)
        return True

    def _keep_taking(self, retry_s: float) -> None:
        while not self._stop.wait(retry_s):
            if len(self.connections) < SLOTS_LIMIT:
                self._grab()

    def end(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            held, self.connections = self.connections, []
        for conn in held:
            conn.close()
        self._engine.dispose()


class IncidentState:
    """The current mode (``slow_query`` drops the lookup index while it lasts), and the
    connections the ``connection_leak`` mode has leaked: after a share of payments
    committed, the code reads the receipt in a new transaction and never returns the
    connection, so idle-in-transaction connections pile up until the pool is empty.
    Switching the mode off (the fix, rolled out) returns them."""

    def __init__(self, engine: Engine, mode: str = "normal") -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.mode = "normal"
        self.since: float | None = time.time()
        self._leaked: list[Connection] = []
        self._fault: LockQueue | SlotHog | Reports | None = None
        self.set(mode)

    def set(self, mode: str) -> str:
        if mode not in MODES:
            raise SettingsError(f"unknown incident mode {mode!r}; valid modes: "
                                f"{', '.join(MODES)}")
        if mode in POSTGRES_MODES and self.engine.dialect.name != "postgresql":
            raise SettingsError(f"{mode} is PostgreSQL's own fault: run live_app with a "
                                "postgresql DATABASE_URL")
        with self.lock:
            before, self.mode = self.mode, mode
            if mode != before:
                self.since = None  # switching: the fault is not in place (or gone) yet
            released: list[Connection] = []
            if mode != "connection_leak":
                released, self._leaked = self._leaked, []
        for conn in released:  # first: a leaked transaction would block DROP INDEX
            conn.rollback()
            conn.close()
        gone = None
        if mode != before and self._fault is not None:
            gone = self._fault.end()  # when the fault ended, if it says
            self._fault = None
        try:
            if mode == "lock_contention" and before != mode:
                self._fault = LockQueue(self.engine)
            elif mode == "too_many_clients" and before != mode:
                self._fault = SlotHog(self.engine)
            elif mode == "noisy_neighbour" and before != mode:
                self._fault = Reports(self.engine)
        except (SettingsError, sqlalchemy.exc.SQLAlchemyError):
            with self.lock:  # the fault is not in place: the mode stays what it was
                self.mode, self.since = before, time.time()
            raise
        # slow_query is a migration that dropped the lookup index; leaving it restores it
        if mode == "slow_query" and before != "slow_query":
            drop_lookup_index(self.engine)
        elif before == "slow_query" and mode != "slow_query":
            restore_lookup_index(self.engine)
        if mode != before:
            with self.lock:  # the fault is in place (or gone) from now on
                self.since = gone if isinstance(gone, float) and mode == "normal" \
                    else time.time()
        return mode

    def leak(self, conn: Connection, payment_id: int) -> None:
        """The leaking code path: after the payment committed it reads the receipt on the
        same connection (a new transaction begins) and returns without closing it. Switched
        off meanwhile, it is not kept: the caller closes it as usual."""
        conn.execute(text(LEAK_SQL), {"id": payment_id})
        with self.lock:
            if self.mode == "connection_leak":
                self._leaked.append(conn)

    def holds(self, conn: Connection) -> bool:
        with self.lock:
            return any(c is conn for c in self._leaked)

    def close(self) -> None:
        self.set("normal")
