"""A private PostgreSQL cluster from the Debian package's binaries, on a free port."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .prometheus_server import free_port


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or (
        [shutil.which(name)] if shutil.which(name) else [])
    if not found:
        reason = ("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found[-1]


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: CI runs as root, so drop to the postgres user."""
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


@contextmanager
def running_postgres() -> Iterator[tuple[str, Path]]:
    """Yields a SQLAlchemy URL (psycopg 3) for database ``payments`` and the server log."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    # pytest's tmp_path sits under a root-only directory: make one the postgres user can use
    tmp = Path(tempfile.mkdtemp(prefix="replayer-pg-"))
    data = tmp / "pgdata"
    data.mkdir()
    if os.geteuid() == 0:
        uid = pwd.getpwnam("postgres").pw_uid
        for path in (tmp, data):
            os.chown(path, uid, -1)
    port = free_port()
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "postgres",
                                 "--no-sync"]), **run)  # type: ignore[arg-type]
    opts = (f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c log_min_duration_statement=500 -c max_connections=50")
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-o", opts, "-l",
                                 str(data / "server.log"), "-w", "start"]), **run)  # type: ignore[arg-type]
    try:
        subprocess.run(_as_postgres([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port),
                                     "-U", "postgres", "payments"]), **run)  # type: ignore[arg-type]
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/payments", data / "server.log"
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
