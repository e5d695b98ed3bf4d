"""Incident modes, switchable at run time."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

from .db import drop_lookup_index, restore_lookup_index
from .settings import MODES, SettingsError

# the receipt lookup of the leaking code path (it opens a transaction and never ends it)
LEAK_SQL = "SELECT payments.id, payments.status FROM payments WHERE payments.id = :id"


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
        self.set(mode)

    def set(self, mode: str) -> str:
        if mode not in MODES:
            raise SettingsError(f"unknown incident mode {mode!r}; valid modes: "
                                f"{', '.join(MODES)}")
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
        # slow_query is a migration that dropped the lookup index; leaving it restores it
        if mode == "slow_query" and before != "slow_query":
            drop_lookup_index(self.engine)
        elif before == "slow_query" and mode != "slow_query":
            restore_lookup_index(self.engine)
        if mode != before:
            with self.lock:
                self.since = time.time()  # the fault is in place (or gone) from now on
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
