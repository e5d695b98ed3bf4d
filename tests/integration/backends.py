"""Start real Loki / Tempo binaries (from PATH or LOKI_BIN / TEMPO_BIN) with infra/ configs.

There is no Debian package for either; where the binaries are missing, the tests that need
them skip with the reason (users get them as the Docker images named in infra/).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from .prometheus_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def binary(name: str) -> str:
    path = os.environ.get(f"{name.upper()}_BIN") or shutil.which(name)
    if not path:
        pytest.skip(f"{name} binary not found: put `{name}` on PATH or set "
                    f"{name.upper()}_BIN (no Debian package here; the grafana/{name} Docker "
                    "image has it)")
    return path


@contextmanager
def _run(args: list[str], env: dict[str, str], ready_url: str, log: Path,
         stop_timeout_s: float = 60) -> Iterator[None]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{args[0]} exited: {log.read_text()[-2000:]}")
                try:
                    if requests.get(ready_url, timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args[0]} not ready after 120 s")
                time.sleep(0.5)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=stop_timeout_s)  # Tempo can take minutes: bounded
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def running_loki(tmp: Path) -> Iterator[str]:
    port, grpc = free_port(), free_port()
    env = {"LOKI_DATA": str(tmp / "loki"), "LOKI_HTTP_PORT": str(port),
           "LOKI_GRPC_PORT": str(grpc), "LOKI_LISTEN": "127.0.0.1"}
    url = f"http://127.0.0.1:{port}"
    with _run([binary("loki"), f"-config.file={ROOT / 'infra/loki/loki.yaml'}",
               "-config.expand-env=true"], env, f"{url}/ready", tmp / "loki.log"):
        yield url


@contextmanager
def running_tempo(tmp: Path) -> Iterator[tuple[str, str]]:
    """Yields (OTLP gRPC URL, Tempo HTTP API URL)."""
    http, grpc, otlp_g, otlp_h = free_port(), free_port(), free_port(), free_port()
    env = {"TEMPO_DATA": str(tmp / "tempo"), "TEMPO_HTTP_PORT": str(http),
           "TEMPO_GRPC_PORT": str(grpc), "TEMPO_LISTEN": "127.0.0.1",
           "TEMPO_OTLP_GRPC": f"127.0.0.1:{otlp_g}", "TEMPO_OTLP_HTTP": f"127.0.0.1:{otlp_h}"}
    api = f"http://127.0.0.1:{http}"
    with _run([binary("tempo"), f"-config.file={ROOT / 'infra/tempo/tempo.yaml'}",
               "-config.expand-env=true"], env, f"{api}/ready", tmp / "tempo.log"):
        yield f"http://127.0.0.1:{otlp_g}", api


def eventually(probe, timeout_s: float = 90.0, every_s: float = 1.0):  # type: ignore[no-untyped-def]
    """Poll an eventually-consistent server until ``probe()`` is truthy (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every_s)
