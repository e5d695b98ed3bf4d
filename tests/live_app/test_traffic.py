"""The traffic driver against live_app served by a real uvicorn."""

from __future__ import annotations

import pytest
import requests
from click.testing import CliRunner

from live_app.traffic import parse_duration, run_traffic
from replayer.cli import cli


def test_bounded_run_counts_every_request(live_server: str) -> None:
    result = run_traffic(live_server, rps=200, requests_total=60, concurrency=4)
    assert result.sent == 60 == sum(result.statuses.values())
    assert set(result.statuses) <= {"200", "404"} and result.statuses["200"] > 30
    assert result.achieved_rps > 0 and "sent 60 requests" in result.summary()


def test_incident_switch_shows_in_the_status_counts(live_server: str) -> None:
    assert requests.post(f"{live_server}/incident", json={"mode": "error_spike"},
                         timeout=5).status_code == 200
    result = run_traffic(live_server, rps=200, requests_total=40, concurrency=4, seed=3)
    posts = result.statuses["500"]
    assert posts > 10  # every POST /payment fails at error_ratio 1.0


def test_replayer_traffic_command(live_server: str) -> None:
    r = CliRunner().invoke(cli, ["traffic", "--url", live_server, "--rps", "100",
                                 "--requests", "20", "--concurrency", "2"])
    assert r.exit_code == 0, r.output
    assert "sent 20 requests" in r.output


def test_replayer_traffic_needs_a_bound_and_a_server() -> None:
    r = CliRunner().invoke(cli, ["traffic", "--rps", "5"])
    assert r.exit_code == 2 and "--duration or --requests" in r.output
    r = CliRunner().invoke(cli, ["traffic", "--url", "http://127.0.0.1:9", "--rps", "100",
                                 "--requests", "3"])
    assert r.exit_code == 4 and "is live_app running" in r.output


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("2m", 120), ("1.5h", 5400),
                                           ("250ms", 0.25)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_poisson_arrivals_keep_the_mean_rate_with_uneven_gaps() -> None:
    import statistics

    from live_app.traffic import offsets

    even = offsets(50, 2000)
    assert even[:3] == [0.0, 0.02, 0.04]
    due = offsets(50, 2000, seed=3, poisson=True)
    assert len(due) == 2000 and due == offsets(50, 2000, seed=3, poisson=True)
    gaps = [b - a for a, b in zip(due, due[1:])]
    assert min(gaps) >= 0 and abs(statistics.mean(gaps) - 0.02) < 0.002
    # exponential: the spread is about the mean (even spacing has none)
    assert 0.9 < statistics.stdev(gaps) / statistics.mean(gaps) < 1.1


def test_a_slow_app_neither_stretches_the_run_nor_hides_the_shortfall() -> None:
    """`--rps 10 --duration 10s` against a slow app ran 59 s at 1.7/s without a word. A
    server that answers after 1.5 s, two slots: the run stops at its duration (plus the
    grace second) and says the rate fell short, and why."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Slow(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            time.sleep(1.5)
            body = b'{"id": 1}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        t0 = time.monotonic()
        result = run_traffic(url, rps=10, duration_s=2.0, concurrency=2)
        took = time.monotonic() - t0
    finally:
        server.shutdown()
        server.server_close()
    assert took < 2.0 + 1.0 + 1.0, took  # the duration, the grace, and slack for a busy CI
    assert result.sent <= 4 and result.not_sent >= 15
    assert result.short and result.achieved_rps < 3
    text = result.summary()
    assert f"warning: {result.achieved_rps:.1f}/s of the 10/s asked ({result.not_sent} " \
           "requests not sent): all 2 slots were busy" in text
    assert sum(result.statuses.values()) == result.sent
    # what was still unanswered at the end is said, not silently waited for
    assert result.cut_at_end == result.statuses.get("error: ReadTimeout", 0) >= 1
