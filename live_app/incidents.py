"""Incident modes, switchable at run time."""

from __future__ import annotations

import threading
from contextlib import ExitStack

from sqlalchemy import Engine

from .db import hold_connections
from .settings import MODES, SettingsError


class IncidentState:
    """The current mode; ``pool_exhaustion`` really holds every pool connection open in a
    transaction (like a leaked batch job) until the mode changes."""

    def __init__(self, engine: Engine, capacity: int, mode: str = "normal") -> None:
        self.engine, self.capacity = engine, capacity
        self.lock = threading.Lock()
        self.mode = "normal"
        self._held = ExitStack()
        self.set(mode)

    def set(self, mode: str) -> str:
        if mode not in MODES:
            raise SettingsError(f"unknown incident mode {mode!r}; valid modes: "
                                f"{', '.join(MODES)}")
        with self.lock:
            if mode == self.mode:
                return mode
            self._held.close()
            self._held = ExitStack()
            if mode == "pool_exhaustion":
                self._held.enter_context(hold_connections(self.engine, self.capacity))
            self.mode = mode
            return mode

    def close(self) -> None:
        with self.lock:
            self._held.close()
