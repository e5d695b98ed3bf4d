"""Start real Loki / Tempo binaries (from PATH or LOKI_BIN / TEMPO_BIN) with infra/ configs.

There is no Debian package for either; where the binaries are missing, the tests that need
them skip with the reason (users get them as the Docker images named in infra/).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .prometheus_server import free_port, run_server

ROOT = Path(__file__).resolve().parents[2]


def binary(name: str) -> str:
    path = os.environ.get(f"{name.upper()}_BIN") or shutil.which(name)
    if not path:
        pytest.skip(f"{name} binary not found: put `{name}` on PATH or set "
                    f"{name.upper()}_BIN (no Debian package here; the grafana/{name} Docker "
                    "image has it)")
    return path


@contextmanager
def running_loki(tmp: Path) -> Iterator[str]:
    port, grpc = free_port(), free_port()
    env = {"LOKI_DATA": str(tmp / "loki"), "LOKI_HTTP_PORT": str(port),
           "LOKI_GRPC_PORT": str(grpc), "LOKI_LISTEN": "127.0.0.1"}
    url = f"http://127.0.0.1:{port}"
    with run_server([binary("loki"), f"-config.file={ROOT / 'infra/loki/loki.yaml'}",
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
    with run_server([binary("tempo"), f"-config.file={ROOT / 'infra/tempo/tempo.yaml'}",
                         "-config.expand-env=true"], env, f"{api}/ready", tmp / "tempo.log",
                         stop_timeout_s=5):  # its data is thrown away; a graceful stop takes ~60 s
        yield f"http://127.0.0.1:{otlp_g}", api


@contextmanager
def running_mimir(tmp: Path, *flags: str) -> Iterator[str]:
    """Mimir 3.x, monolithic, with infra/mimir/mimir.yaml on free loopback ports; yields its
    base URL (push at /api/v1/push, the Prometheus API under /prometheus)."""
    http, grpc, gossip = free_port(), free_port(), free_port()
    env = {"MIMIR_DATA": str(tmp / "mimir"), "MIMIR_LISTEN": "127.0.0.1",
           "MIMIR_HTTP_PORT": str(http), "MIMIR_GRPC_PORT": str(grpc),
           "MIMIR_MEMBERLIST_PORT": str(gossip),
           "MIMIR_RUNTIME_CONFIG": str(ROOT / "infra/mimir/runtime.yaml")}
    url = f"http://127.0.0.1:{http}"
    (tmp / "mimir").mkdir(parents=True, exist_ok=True)  # its activity tracker goes there
    with run_server([binary("mimir"), f"-config.file={ROOT / 'infra/mimir/mimir.yaml'}",
                     "-config.expand-env=true", *flags], env, f"{url}/ready",
                    tmp / "mimir.log",
                    stop_timeout_s=10):
        yield url


def eventually(probe, timeout_s: float = 90.0, every_s: float = 1.0):  # type: ignore[no-untyped-def]
    """Poll an eventually-consistent server until ``probe()`` is truthy (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every_s)
