"""A throwaway PostgreSQL cluster from the local server binaries (Debian's ``postgresql``),
for running live_app against a real database without Docker: tests, demos and the script
that re-records the live fixture. Listens on 127.0.0.1 only; trust auth; removed on exit."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found and shutil.which(name):
        found = [str(shutil.which(name))]
    if not found:
        raise PostgresMissing(f"PostgreSQL's {name} not found (Debian: apt-get install "
                              "postgresql)")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; CI runs as root, so drop to the postgres user."""
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


@contextmanager
def running_postgres(log_min_duration_ms: int = 250) -> Iterator[tuple[str, Path]]:
    """Yields a SQLAlchemy URL (psycopg 3) for database ``payments`` and the server log."""
    initdb, pg_ctl, createdb = pg_bin("initdb"), pg_bin("pg_ctl"), pg_bin("createdb")
    tmp = Path(tempfile.mkdtemp(prefix="replayer-pg-"))
    data = tmp / "pgdata"
    data.mkdir()
    if os.geteuid() == 0:
        uid = pwd.getpwnam("postgres").pw_uid
        for path in (tmp, data):
            os.chown(path, uid, -1)
    port = _free_port()
    run: dict = {"check": True, "capture_output": True, "timeout": 120}
    try:
        subprocess.run(_as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "postgres",
                                     "--no-sync"]), **run)
        opts = (f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c log_min_duration_statement={log_min_duration_ms} -c max_connections=50 "
                "-c log_line_prefix='%m [%p] '")
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-o", opts, "-l",
                                     str(data / "server.log"), "-w", "start"]), **run)
        subprocess.run(_as_postgres([createdb, "-h", "127.0.0.1", "-p", str(port), "-U",
                                     "postgres", "payments"]), **run)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/payments", data / "server.log"
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def server_version() -> str:
    out = subprocess.run([pg_bin("postgres"), "--version"], capture_output=True, text=True,
                         timeout=30)
    return out.stdout.strip()
