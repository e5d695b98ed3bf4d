"""`replayer stack` runs the real Prometheus (and Loki/Tempo when installed); after
`load slow_query`, every PromQL query of the provisioned dashboards returns data."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from replayer.cli import cli
from tests.conftest import cached_incident

from .backends import eventually
from .prometheus_server import free_port, prometheus_binary, query_range
from .test_prometheus_load import iso

pytestmark = pytest.mark.integration
DASHBOARDS = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "dashboards"


def dashboard_promql() -> list[tuple[str, str]]:
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["uid"] == "prometheus":
                    out.append((f"{path.stem}: {panel['title']}", target["expr"]))
    return out


def test_stack_up_load_and_every_dashboard_query_returns_data(tmp_path: Path,
                                                               monkeypatch) -> None:  # type: ignore[no-untyped-def]
    prometheus_binary()  # skip (or fail under CI) with the reason when it is missing
    monkeypatch.delenv("LOKI_BIN", raising=False)
    monkeypatch.delenv("TEMPO_BIN", raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep)
        if not (Path(p) / "loki").exists() and not (Path(p) / "tempo").exists()))
    port = free_port()
    data = tmp_path / "stack"
    runner = CliRunner()
    # --scrape: Prometheus scrapes a running service too (here, itself, standing in for
    # live_app, which nothing scraped without Docker)
    r = runner.invoke(cli, ["stack", "up", "--data-dir", str(data), "--prometheus-port",
                            str(port), "--scrape", f"self-check=127.0.0.1:{port}"])
    try:
        assert r.exit_code == 0, r.output
        assert f"prometheus  ready   http://127.0.0.1:{port}" in r.output
        assert f"prometheus  scrapes self-check (127.0.0.1:{port})" in r.output
        def targets() -> list[tuple[str, str]]:  # discovery hands targets over within ~5 s
            got = requests.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=10).json()
            return [(t["labels"]["job"], t["scrapeUrl"])
                    for t in got["data"]["activeTargets"]]

        assert eventually(targets, timeout_s=30, every_s=0.5) \
            == [("self-check", f"http://127.0.0.1:{port}/metrics")]
        assert "loki        missing" in r.output and "grafana/loki Docker image" in r.output
        assert "tempo       missing" in r.output
        status = runner.invoke(cli, ["stack", "status", "--data-dir", str(data)])
        assert "prometheus  ready" in status.output
        inc = cached_incident("slow_query")
        now = time.time_ns() // 1_000_000
        end_ms = now - now % 60_000
        url = f"http://127.0.0.1:{port}"
        r = runner.invoke(cli, ["load", "slow_query", "--signals", "metrics", "--end",
                                iso(end_ms), "--prometheus-url", url])
        assert r.exit_code == 0, r.output
        queries = dashboard_promql()
        assert len(queries) >= 20
        empty = []
        for title, expr in queries:
            promql = re.sub(r"\$__rate_interval", "1m", expr)
            result = query_range(url, promql, (end_ms - inc.duration_ms) / 1000, end_ms / 1000,
                                 15)
            if not result:
                empty.append(f"{title}: {expr}")
        assert not empty, "panels without data:\n" + "\n".join(empty)
    finally:
        down = runner.invoke(cli, ["stack", "down", "--data-dir", str(data), "--timeout", "30"])
    assert "prometheus: stopped (" in down.output
    after = runner.invoke(cli, ["stack", "status", "--data-dir", str(data)])
    # still listed after `down`, as stopped (it used to print a stray " -" only)
    assert after.exit_code == 1
    assert after.output.splitlines()[0] == f"prometheus  stopped   http://127.0.0.1:{port}"


def test_stack_without_any_binary_says_what_to_install(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in ("PROMETHEUS_BIN", "LOKI_BIN", "TEMPO_BIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    r = CliRunner().invoke(cli, ["stack", "up", "--data-dir", str(tmp_path / "s")])
    assert r.exit_code == 2
    assert "apt-get install prometheus" in r.output


def test_stack_status_without_a_stack(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["stack", "status", "--data-dir", str(tmp_path / "none")])
    assert r.exit_code == 2 and "replayer stack up" in r.output


def test_stack_on_other_ports_picks_free_internal_grpc_ports(tmp_path: Path,
                                                             monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Loki and Tempo also listen on an internal gRPC port; moving their HTTP ports (a
    second stack) must not derive one past 65535 or onto the first stack's."""
    import replayer.stack as stack

    seen = {}

    def fake_up(data_dir, ports, env, scrape):  # type: ignore[no-untyped-def]
        seen["ports"] = ports
        return stack.StackState(str(data_dir))

    monkeypatch.setattr(stack, "up", fake_up)
    CliRunner().invoke(cli, ["stack", "up", "--data-dir", str(tmp_path), "--loki-port", "62000",
                             "--tempo-port", "63000"])
    p = seen["ports"]
    assert 0 < p.loki_grpc < 65536 and p.loki_grpc not in (9096, 62000)
    assert 0 < p.tempo_grpc < 65536 and p.tempo_grpc not in (9095, 63000)
    CliRunner().invoke(cli, ["stack", "up", "--data-dir", str(tmp_path)])
    assert (seen["ports"].loki_grpc, seen["ports"].tempo_grpc) == (9096, 9095)


def test_stack_up_refuses_a_port_another_program_answers_on(tmp_path: Path,
                                                            monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 18, defect 2: with the port taken by another HTTP server (answering 200 on
    every path), `stack up` said "prometheus ready" while its own Prometheus had died with
    "address already in use". It now refuses before starting anything, naming the port."""
    import http.server
    import threading

    from tests.integration.prometheus_server import prometheus_binary

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    port = other.server_address[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "prometheus").symlink_to(prometheus_binary())
    for name in ("PROMETHEUS_BIN", "LOKI_BIN", "TEMPO_BIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    try:
        r = CliRunner().invoke(cli, ["stack", "up", "--data-dir", str(tmp_path / "s"),
                                     "--prometheus-port", str(port)])
    finally:
        other.shutdown()
        other.server_close()
    assert r.exit_code == 3, r.output
    assert f"port {port} (prometheus) is in use by another program" in r.output
    assert "ready" not in r.output


@pytest.mark.parametrize("value", ["live_app", "x=127.0.0.1", "=h:80", "x=h:99999",
                                   "x=http://h:80/metrics", "x=h:port"])
def test_stack_scrape_takes_job_equals_host_port(tmp_path: Path, value: str) -> None:
    r = CliRunner().invoke(cli, ["stack", "up", "--data-dir", str(tmp_path), "--scrape", value])
    assert r.exit_code == 2
    assert f"--scrape {value!r}: give JOB=HOST:PORT" in r.output


def test_stack_down_says_what_it_waits_for(tmp_path: Path) -> None:
    """Tempo takes about a minute to stop on TERM: `down` says so as it starts waiting,
    not a minute later."""
    import subprocess

    from replayer.stack import Service, StackState, down

    # a process that ignores TERM for a while, like Tempo flushing
    slow = subprocess.Popen(["bash", "-c", "trap '' TERM; echo ignoring; sleep 4"],
                            start_new_session=True, stdout=subprocess.PIPE, text=True)
    assert slow.stdout is not None and slow.stdout.readline() == "ignoring\n"
    state = StackState(str(tmp_path), [Service("tempo", slow.pid, "http://127.0.0.1:1",
                                               "http://127.0.0.1:1/ready", "")])
    state.save()
    said: list[tuple[float, str]] = []
    t0 = time.monotonic()
    report = down(tmp_path, timeout_s=2.0, say=lambda line: said.append(
        (time.monotonic() - t0, line)))
    slow.wait(timeout=10)
    slow.stdout.close()
    assert said[0][1].startswith(f"tempo: waiting for it to stop (pid {slow.pid}; Tempo flushes")
    assert said[0][1].endswith("it is killed if still running after 2 s")
    assert said[0][0] < 2.0  # said before the wait ended
    assert said[-1][1] == "tempo: killed after 2 s (it did not stop on TERM)"
    assert report == [line for _, line in said]
