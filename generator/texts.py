"""Exact texts real components print (see ``reference/real-telemetry.md``)."""

from __future__ import annotations

from .simulate import ERR_GATEWAY, ERR_POOL_TIMEOUT, ERR_STATEMENT_TIMEOUT

SELECT_BY_KEY = ("SELECT payments.id, payments.status, payments.amount \nFROM payments \n"
                 "WHERE payments.idempotency_key = %(idempotency_key_1)s")
SELECT_BY_ID = ("SELECT payments.id, payments.status, payments.amount, payments.currency, "
                "payments.created_at \nFROM payments \nWHERE payments.id = %(pk_1)s")
INSERT_PAYMENT = ("INSERT INTO payments (idempotency_key, amount, currency, status) VALUES "
                  "(%(idempotency_key)s, %(amount)s, %(currency)s, %(status)s) "
                  "RETURNING payments.id")
PG_SELECT_BY_KEY = ("SELECT payments.id, payments.status, payments.amount FROM payments "
                    "WHERE payments.idempotency_key = $1")
PG_SELECT_BY_ID = ("SELECT payments.id, payments.status, payments.amount, payments.currency, "
                   "payments.created_at FROM payments WHERE payments.id = $1")

STATEMENT_TIMEOUT_MESSAGE = (
    "(psycopg.errors.QueryCanceled) canceling statement due to statement timeout\n"
    f"[SQL: {SELECT_BY_KEY}]\n(Background on this error at: https://sqlalche.me/e/20/e3q8)")

HTTP_REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}


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
        ERR_GATEWAY: ("payment_service.gateway.PaymentGatewayError",
                      "card-processor answered 503 Service Unavailable"),
    }


def stacktrace(exc_type: str, message: str) -> str:
    if exc_type.endswith("PaymentGatewayError"):
        inner = ('  File "/app/payment_service/gateway.py", line 31, in charge\n'
                 "    raise PaymentGatewayError(f\"card-processor answered {status}\")\n")
    elif exc_type == "sqlalchemy.exc.TimeoutError":
        inner = ('  File "/app/.venv/lib/python3.12/site-packages/sqlalchemy/pool/impl.py", '
                 'line 168, in _do_get\n    raise exc.TimeoutError(\n')
    else:
        inner = ('  File "/app/.venv/lib/python3.12/site-packages/sqlalchemy/engine/default.py", '
                 'line 941, in do_execute\n    cursor.execute(statement, parameters)\n')
    return ("Traceback (most recent call last):\n"
            '  File "/app/payment_service/routes.py", line 57, in create_payment\n'
            "    existing = session.scalar(select(Payment).where(Payment.idempotency_key == key))\n"
            f"{inner}{exc_type}: {message}")
