"""Exact texts real components print (see ``reference/real-telemetry.md``)."""

from __future__ import annotations

from .simulate import (
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
_ACQUIRE = {
    POST_PAYMENT: (f'  File "{APP_FILE}", line 126, in create_payment\n'
                   "    with acquire(engine, tel.pool, incident.holds) as conn:\n"),
    GET_PAYMENT: (f'  File "{APP_FILE}", line 147, in read_payment\n'
                  "    with acquire(engine, tel.pool) as conn:\n"),
}
_CONTEXT = (f'  File "{STDLIB}/contextlib.py", line 137, in __enter__\n'
            "    return next(self.gen)\n           ^^^^^^^^^^^^^^\n"
            f'  File "{APP_FILE}", line 58, in acquire\n'
            "    conn = engine.connect()\n           ^^^^^^^^^^^^^^^^\n")
_SPAN_SCOPE = (f'  File "{SITE}/opentelemetry/trace/__init__.py", line 602, in use_span\n'
               "    yield span\n"
               f'  File "{SITE}/opentelemetry/sdk/trace/__init__.py", line 1136, in '
               "start_as_current_span\n    yield span\n")
_HEAD = "Traceback (most recent call last):\n"


def stacktrace(err: int, route: int, exc_type: str, message: str) -> str:
    """The traceback payment-service's handler records on its server span."""
    if err == ERR_GATEWAY:
        frames = (f'  File "{APP_FILE}", line 124, in create_payment\n'
                  '    raise PaymentGatewayError("card-processor answered 503 Service '
                  'Unavailable")\n')
    elif err == ERR_POOL_TIMEOUT:
        frames = _ACQUIRE[route] + _CONTEXT + _CHECKOUT
    else:
        frames = (f'  File "{SITE}/sqlalchemy/engine/default.py", line 941, in do_execute\n'
                  "    cursor.execute(statement, parameters)\n")
    return f"{_HEAD}{frames}{exc_type}: {message}\n"


def connect_stacktrace(exc_type: str, message: str) -> str:
    """The traceback SQLAlchemy's instrumentation records on the `connect` span."""
    return f"{_HEAD}{_SPAN_SCOPE}{_CHECKOUT}{exc_type}: {message}\n"
