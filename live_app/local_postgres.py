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


class ExporterMissing(RuntimeError):
    """No postgres_exporter binary on this machine."""


def exporter_bin() -> str:
    """postgres_exporter: ``POSTGRES_EXPORTER_BIN``, else Debian's package name on PATH
    (``prometheus-postgres-exporter``), else upstream's (``postgres_exporter``)."""
    found = os.environ.get("POSTGRES_EXPORTER_BIN") or shutil.which(
        "prometheus-postgres-exporter") or shutil.which("postgres_exporter")
    if not found:
        raise ExporterMissing("postgres_exporter not found (Debian: apt-get install "
                              "prometheus-postgres-exporter; or set POSTGRES_EXPORTER_BIN)")
    return found


def exporter_version(binary: str) -> str:
    """``0.11.1`` from ``postgres_exporter, version 0.11.1 (branch: ...)``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    for word, nxt in zip(text.split(), text.split()[1:]):
        if word == "version":
            return nxt
    raise ExporterMissing(f"{binary} --version did not say its version: {text[:200]!r}")


@contextmanager
def running_exporter(database_url: str, wait_s: float = 30.0) -> Iterator[tuple[str, str]]:
    """postgres_exporter for the database of ``database_url`` (a SQLAlchemy URL) on a free
    loopback port; yields (its /metrics URL, its version). Stopped on exit."""
    import time

    import requests

    binary = exporter_bin()
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    dsn += ("&" if "?" in dsn else "?") + "sslmode=disable"
    port = _free_port()
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"],
                            env={**os.environ, "DATA_SOURCE_NAME": dsn},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
                raise ExporterMissing(f"{binary} exited with {proc.returncode}: {err}")
            try:
                if "\npg_up 1" in "\n" + requests.get(url, timeout=2).text:
                    break
            except requests.RequestException:
                pass  # not listening yet: polled again until the deadline
            if time.monotonic() > deadline:
                raise ExporterMissing(f"{binary} did not report pg_up 1 within {wait_s:.0f} s")
            time.sleep(0.1)
        yield url, exporter_version(binary)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
