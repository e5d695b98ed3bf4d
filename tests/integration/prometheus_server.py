"""Start a real Prometheus (the Debian package's binary from PATH, or PROMETHEUS_BIN)."""

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

from replayer.stack import free_port  # noqa: F401  (the tests take it from here)


def prometheus_binary() -> str:
    path = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    if path:
        return path
    reason = ("prometheus binary not found on PATH (Debian: apt-get install prometheus; or set "
              "PROMETHEUS_BIN)")
    if os.environ.get("CI"):
        pytest.fail(reason)  # CI installs it: missing is a broken CI, not a skip
    pytest.skip(reason)


@contextmanager
def running_prometheus(tmp: Path, receiver: bool = True, exemplars: bool = True,
                       ooo_window: str | None = "2h",
                       max_exemplars: int | None = None) -> Iterator[str]:
    binary = prometheus_binary()
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = tmp / "prometheus.yml"
    lines = ["global:", "  scrape_interval: 15s"]
    if ooo_window or max_exemplars:
        lines += ["storage:"]
    if ooo_window:
        lines += ["  tsdb:", f"    out_of_order_time_window: {ooo_window}"]
    if max_exemplars:
        lines += ["  exemplars:", f"    max_exemplars: {max_exemplars}"]
    config.write_text("\n".join(lines) + "\n")
    args = [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    if receiver:
        args.append("--web.enable-remote-write-receiver")
    if exemplars:
        args.append("--enable-feature=exemplar-storage")
    url = f"http://127.0.0.1:{port}"
    with run_server(args, {}, f"{url}/-/ready", tmp / "prometheus.log", ready_within_s=60,
                    stop_timeout_s=20):
        yield url


@contextmanager
def run_server(args: list[str], env: dict[str, str], ready_url: str, log: Path,
               ready_within_s: float = 120, stop_timeout_s: float = 60) -> Iterator[None]:
    """Run a server process until it answers ``ready_url`` with 200; stop it after (a
    bounded wait, then kill: Tempo can take minutes to stop)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + ready_within_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{args[0]} exited: {log.read_text()[-2000:]}")
                try:
                    if requests.get(ready_url, timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args[0]} not ready after {ready_within_s:g} s")
                time.sleep(0.1)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def query(url: str, promql: str, at_s: float) -> list[dict]:
    r = requests.get(f"{url}/api/v1/query", params={"query": promql, "time": f"{at_s:.3f}"},
                     timeout=30)
    r.raise_for_status()
    return r.json()["data"]["result"]


def query_range(url: str, promql: str, start_s: float, end_s: float, step_s: float) -> list[dict]:
    r = requests.get(f"{url}/api/v1/query_range", params={
        "query": promql, "start": start_s, "end": end_s, "step": step_s}, timeout=30)
    r.raise_for_status()
    return r.json()["data"]["result"]
