"""Exact texts real components print (see ``reference/real-telemetry.md``)."""

from __future__ import annotations

from .simulate import (
    ERR_CONNECT,
    ERR_DISK_FULL,
    ERR_GATEWAY,
    ERR_POOL_TIMEOUT,
    ERR_STATEMENT_TIMEOUT,
    GET_PAYMENT,
    POST_PAYMENT,
)

# as live_app sends them (SQLAlchemy text() and Core insert, psycopg placeholders)
SELECT_BY_KEY = ("SELECT payments.id, payments.status, payments.amount FROM payments WHERE "
                 "payments.idempotency_key = %(key)s")
SELECT_BY_ID = ("SELECT payments.id, payments.status, payments.amount, payments.currency, "
                "payments.created_at FROM payments WHERE payments.id = %(id)s")
# connection_leak's receipt lookup (live_app.incidents.LEAK_SQL, rendered by psycopg)
SELECT_RECEIPT = ("SELECT payments.id, payments.status FROM payments WHERE payments.id = "
                  "%(id)s")
INSERT_PAYMENT = ("INSERT INTO payments (idempotency_key, amount, currency, status, created_at) "
                  "VALUES (%(idempotency_key)s::VARCHAR, %(amount)s, %(currency)s::VARCHAR, "
                  "%(status)s::VARCHAR, %(created_at)s::TIMESTAMP WITHOUT TIME ZONE) "
                  "RETURNING payments.id")
PG_SELECT_BY_KEY = ("SELECT payments.id, payments.status, payments.amount FROM payments "
                    "WHERE payments.idempotency_key = $1")
PG_SELECT_BY_ID = ("SELECT payments.id, payments.status, payments.amount, payments.currency, "
                   "payments.created_at FROM payments WHERE payments.id = $1")

# slow_query's fix, as live_app runs it (live_app/db.py restore_lookup_index)
CREATE_LOOKUP_INDEX = ("CREATE INDEX IF NOT EXISTS ix_payments_idempotency_key ON payments "
                       "(idempotency_key)")
PG_INSERT_PAYMENT = ("INSERT INTO payments (idempotency_key, amount, currency, status, "
                     "created_at) VALUES ($1::VARCHAR, $2, $3::VARCHAR, $4::VARCHAR, "
                     "$5::TIMESTAMP WITHOUT TIME ZONE) RETURNING payments.id")
# deploy_regression's N+1: Session.get() of each of the card's recent payments
SELECT_BY_PK = ("SELECT payments.id AS payments_id, payments.status AS payments_status, "
                "payments.amount AS payments_amount FROM payments WHERE payments.id = "
                "%(pk_1)s")
PAYMENTS_RELFILE = "base/16384/16390"  # payments' heap file: database 16384, relation 16390
PAYMENTS_RELID, PAYMENTS_DBID = 16390, 16384
# where the name of the table starts in each SELECT (PostgreSQL reports a lock wait during
# parse "at character N")
LOCK_AT = {POST_PAYMENT: PG_SELECT_BY_KEY.index("FROM payments") + 6,
           GET_PAYMENT: PG_SELECT_BY_ID.index("FROM payments") + 6}
MIGRATION_SQL = "ALTER TABLE payments ADD COLUMN refund_reason text"
HOLDER_SQL = "SELECT count(*) FROM payments WHERE created_at > now() - interval '7 days'"
REPORT_SQL = ("SELECT date_trunc('day', ledger_entries.booked_at) AS day, "
              "ledger_entries.account_id, sum(ledger_entries.amount) AS total FROM "
              "ledger_entries GROUP BY 1, 2 ORDER BY total DESC")
# PostgreSQL 15 to an ordinary role when only the superuser slots are left (captured)
NO_SLOT = "remaining connection slots are reserved for non-replication superuser connections"
CONNECT_REFUSED_MESSAGE = (
    '(psycopg.OperationalError) connection failed: connection to server at "10.0.3.2", port '
    f'5432 failed: FATAL:  {NO_SLOT}\n(Background on this error at: '
    "https://sqlalche.me/e/20/e3q8)")
DISK_FULL_MESSAGE = (
    f'(psycopg.errors.DiskFull) could not extend file "{PAYMENTS_RELFILE}": No space left on '
    f"device\nHINT:  Check free disk space.\n[SQL: {INSERT_PAYMENT}]\n"
    "(Background on this error at: https://sqlalche.me/e/20/e3q8)")

STATEMENT_TIMEOUT_MESSAGE = (
    "(psycopg.errors.QueryCanceled) canceling statement due to statement timeout\n"
    f"[SQL: {SELECT_BY_KEY}]\n(Background on this error at: https://sqlalche.me/e/20/e3q8)")



def pool_timeout_message(pool_size: int, overflow: int, timeout_s: float) -> str:
    return (f"QueuePool limit of size {pool_size} overflow {overflow} reached, connection timed "
            f"out, timeout {timeout_s:.2f} (Background on this error at: "
            "https://sqlalche.me/e/20/3o7r)")


def failures(knobs: dict[str, float]) -> dict[int, tuple[str, str]]:
    """(fully qualified exception type, message) of each simulated failure kind."""
    return {
        ERR_POOL_TIMEOUT: ("sqlalchemy.exc.TimeoutError", pool_timeout_message(
            int(knobs["pool_size"]), int(knobs["max_overflow"]), knobs["pool_timeout_s"])),
        ERR_STATEMENT_TIMEOUT: ("sqlalchemy.exc.OperationalError", STATEMENT_TIMEOUT_MESSAGE),
        ERR_GATEWAY: ("live_app.app.PaymentGatewayError",
                      "card-processor answered 503 Service Unavailable"),
        ERR_DISK_FULL: ("sqlalchemy.exc.OperationalError", DISK_FULL_MESSAGE),
        ERR_CONNECT: ("sqlalchemy.exc.OperationalError", CONNECT_REFUSED_MESSAGE),
    }


# Tracebacks as Python 3.11 prints them in payment-service's image (python:3.11-slim,
# live_app installed into site-packages): taken from live_app runs, frame for frame (the
# span parity test compares them with a live run). The statement-timeout path is the
# exception: no built-in scenario sets statement_timeout, and it was not captured live.
SITE = "/usr/local/lib/python3.11/site-packages"
STDLIB = "/usr/local/lib/python3.11"
APP_FILE = f"{SITE}/live_app/app.py"

_CHECKOUT = (
    f'  File "{SITE}/opentelemetry/instrumentation/sqlalchemy/engine.py", line 192, in '
    "_wrap_connect_internal\n    return func(*args, **kwargs)\n           ^^^^^^^^^^^^^^^^^^^^^\n"
    f'  File "{SITE}/sqlalchemy/engine/base.py", line 3311, in connect\n'
    "    return self._connection_cls(self)\n           ^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    f'  File "{SITE}/sqlalchemy/engine/base.py", line 149, in __init__\n'
    "    self._dbapi_connection = engine.raw_connection()\n"
    "                             ^^^^^^^^^^^^^^^^^^^^^^^\n"
    f'  File "{SITE}/sqlalchemy/engine/base.py", line 3335, in raw_connection\n'
    "    return self.pool.connect()\n           ^^^^^^^^^^^^^^^^^^^\n"
    f'  File "{SITE}/sqlalchemy/pool/base.py", line 463, in connect\n'
    "    return _ConnectionFairy._checkout(self)\n           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    f'  File "{SITE}/sqlalchemy/pool/base.py", line 1341, in _checkout\n'
    "    fairy = _ConnectionRecord.checkout(pool)\n"
    "            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    f'  File "{SITE}/sqlalchemy/pool/base.py", line 727, in checkout\n'
    "    rec = pool._do_get()\n          ^^^^^^^^^^^^^^\n"
    f'  File "{SITE}/sqlalchemy/pool/impl.py", line 167, in _do_get\n'
    "    raise exc.TimeoutError(\n")
# a checkout that opens a connection and PostgreSQL refuses it (SQLAlchemy 2.0.58, psycopg
# 3.3.9: frames from a real run), below the instrumentation's wrapper
_CONNECT = (
    f'  File "{SITE}/opentelemetry/instrumentation/sqlalchemy/engine.py", line 192, in '
    "_wrap_connect_internal\n    return func(*args, **kwargs)\n           ^^^^^^^^^^^^^^^^^^^^^\n"
    f'  File "{SITE}/sqlalchemy/engine/base.py", line 3311, in connect\n'
    '    return self._connection_cls(self)\n'
    '           ^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    f'  File "{SITE}/sqlalchemy/engine/base.py", line 151, in __init__\n'
    '    Connection._handle_dbapi_exception_noconnection(\n'
    f'  File "{SITE}/sqlalchemy/engine/base.py", line 2466, in '
    '_handle_dbapi_exception_noconnection\n'
    '    raise sqlalchemy_exception.with_traceback(exc_info[2]) from e\n'
    f'  File "{SITE}/sqlalchemy/engine/base.py", line 149, in __init__\n'
    '    self._dbapi_connection = engine.raw_connection()\n'
    '                             ^^^^^^^^^^^^^^^^^^^^^^^\n'
    f'  File "{SITE}/sqlalchemy/engine/base.py", line 3335, in raw_connection\n'
    '    return self.pool.connect()\n'
    '           ^^^^^^^^^^^^^^^^^^^\n'
    f'  File "{SITE}/sqlalchemy/pool/base.py", line 463, in connect\n'
    '    return _ConnectionFairy._checkout(self)\n'
    '           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    f'  File "{SITE}/sqlalchemy/pool/base.py", line 1341, in _checkout\n'
    '    fairy = _ConnectionRecord.checkout(pool)\n'
    '            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    f'  File "{SITE}/sqlalchemy/pool/base.py", line 727, in checkout\n'
    '    rec = pool._do_get()\n'
    '          ^^^^^^^^^^^^^^\n'
    f'  File "{SITE}/sqlalchemy/pool/impl.py", line 178, in _do_get\n'
    '    with util.safe_reraise():\n'
    f'  File "{SITE}/sqlalchemy/util/langhelpers.py", line 122, in __exit__\n'
    '    raise exc_value.with_traceback(exc_tb)\n'
    f'  File "{SITE}/sqlalchemy/pool/impl.py", line 176, in _do_get\n'
    '    return self._create_connection()\n'
    '           ^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    f'  File "{SITE}/sqlalchemy/pool/base.py", line 404, in _create_connection\n'
    '    return _ConnectionRecord(self)\n'
    '           ^^^^^^^^^^^^^^^^^^^^^^^\n'
    f'  File "{SITE}/sqlalchemy/pool/base.py", line 689, in __init__\n'
    '    self.__connect()\n'
    f'  File "{SITE}/sqlalchemy/pool/base.py", line 936, in __connect\n'
    '    with util.safe_reraise():\n'
    f'  File "{SITE}/sqlalchemy/util/langhelpers.py", line 122, in __exit__\n'
    '    raise exc_value.with_traceback(exc_tb)\n'
    f'  File "{SITE}/sqlalchemy/pool/base.py", line 932, in __connect\n'
    '    self.dbapi_connection = connection = pool._invoke_creator(self)\n'
    '                                         ^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    f'  File "{SITE}/sqlalchemy/engine/create.py", line 667, in connect\n'
    '    return dialect.connect(*cargs_tup, **cparams)\n'
    '           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    f'  File "{SITE}/sqlalchemy/engine/default.py", line 642, in connect\n'
    '    return self.loaded_dbapi.connect(*cargs, **cparams)  # type: ignore[no-any-return]  '
    '# NOQA: E501\n'
    '           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    f'  File "{SITE}/psycopg/connection.py", line 126, in connect\n'
    '    raise last_ex.with_traceback(None)\n'
)
_ACQUIRE = {
    POST_PAYMENT: (f'  File "{APP_FILE}", line 132, in create_payment\n'
                   "    with acquire(engine, tel.pool, incident.holds) as conn:\n"),
    GET_PAYMENT: (f'  File "{APP_FILE}", line 153, in read_payment\n'
                  "    with acquire(engine, tel.pool) as conn:\n"),
}
_CONTEXT = (f'  File "{STDLIB}/contextlib.py", line 137, in __enter__\n'
            "    return next(self.gen)\n           ^^^^^^^^^^^^^^\n"
            f'  File "{APP_FILE}", line 60, in acquire\n'
            "    conn = engine.connect()\n           ^^^^^^^^^^^^^^^^\n")
_SPAN_SCOPE = (f'  File "{SITE}/opentelemetry/trace/__init__.py", line 602, in use_span\n'
               "    yield span\n"
               f'  File "{SITE}/opentelemetry/sdk/trace/__init__.py", line 1136, in '
               "start_as_current_span\n    yield span\n")
_HEAD = "Traceback (most recent call last):\n"


def stacktrace(err: int, route: int, exc_type: str, message: str) -> str:
    """The traceback payment-service's handler records on its server span."""
    if err == ERR_GATEWAY:
        frames = (f'  File "{APP_FILE}", line 130, in create_payment\n'
                  '    state["card"].charge(body.amount, body.currency, key)\n'
                  f'  File "{APP_FILE}", line 247, in charge\n'
                  '    raise PaymentGatewayError(f"card-processor answered {r.status_code} "\n')
    elif err == ERR_POOL_TIMEOUT:
        frames = _ACQUIRE[route] + _CONTEXT + _CHECKOUT
    elif err == ERR_CONNECT:
        frames = _ACQUIRE[route] + _CONTEXT + _CONNECT
    else:
        frames = (f'  File "{SITE}/sqlalchemy/engine/default.py", line 941, in do_execute\n'
                  "    cursor.execute(statement, parameters)\n")
    return f"{_HEAD}{frames}{exc_type}: {message}\n"


def connect_stacktrace(exc_type: str, message: str, refused: bool = False) -> str:
    """The traceback SQLAlchemy's instrumentation records on the `connect` span (a pool
    timeout, or a new connection the server refused)."""
    return f"{_HEAD}{_SPAN_SCOPE}{_CONNECT if refused else _CHECKOUT}{exc_type}: {message}\n"
