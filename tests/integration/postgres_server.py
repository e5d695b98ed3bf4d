"""PostgreSQL for the integration tests: live_app's local cluster helper, skipped (or, under
CI, failed) with the reason when the server binaries are missing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from live_app import local_postgres


@contextmanager
def running_postgres() -> Iterator[tuple[str, Path]]:
    try:
        local_postgres.pg_bin("initdb")
    except local_postgres.PostgresMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    with local_postgres.running_postgres() as server:
        yield server
