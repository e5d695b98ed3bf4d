"""live_app under a real uvicorn: the operational endpoints keep answering while payment
requests fill every worker thread, and an incident can always be switched off."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import requests

from live_app.settings import Settings

from .conftest import serving


def _pending(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=1).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("db_client_connection_pending_requests{"))


def _fill_the_threads(pay: ThreadPoolExecutor, url: str,
                      busy: Callable[[str], float]) -> list[Future]:
    """50 payments, polled (bounded) until ``busy`` says all 40 worker threads hold one."""
    waiting = [pay.submit(requests.post, f"{url}/payment", json={"amount": "1.00"},
                          timeout=30) for _ in range(50)]
    deadline = time.monotonic() + 15
    while busy(url) < 40:
        assert time.monotonic() < deadline, "payments did not fill the worker threads"
        time.sleep(0.1)
    return waiting


def test_operational_endpoints_answer_while_the_worker_threads_are_full(
        settings: Settings, tmp_path: Path) -> None:
    # every connection held by the incident and a long pool timeout: 50 payments occupy
    # all 40 worker threads, each waiting on the pool
    s = replace(settings, database_url=f"sqlite:///{tmp_path / 'ops.db'}",
                pool_timeout_s=20.0, incident_mode="connection_leak", leak_ratio=1.0)
    pay = ThreadPoolExecutor(max_workers=60)
    with serving(s) as url:
        try:
            # the leak takes every connection first (each payment keeps its own)
            warm = [pay.submit(requests.post, f"{url}/payment", json={"amount": "1.00"},
                               timeout=30) for _ in range(15)]
            assert all(f.result().status_code == 200 for f in warm)
            waiting = _fill_the_threads(pay, url, _pending)
            # every operational endpoint answers within a second (the timeout fails the test)
            assert requests.get(f"{url}/health", timeout=1).status_code == 200
            assert requests.get(f"{url}/incident", timeout=1).json()["mode"] == \
                "connection_leak"
            assert "db_client_connection_pending_requests" in requests.get(
                f"{url}/metrics", timeout=1).text
            off = requests.post(f"{url}/incident", json={"mode": "normal"}, timeout=1)
            assert off.status_code == 200 and off.json() == {"mode": "normal"}
            # the leaked connections went back: every waiting payment completes
            assert [f.result().status_code for f in waiting] == [200] * 50
        finally:
            pay.shutdown(wait=False, cancel_futures=True)


def test_operational_endpoints_answer_while_threads_wait_on_the_card_processor(
        settings: Settings, tmp_path: Path) -> None:
    """upstream_latency: every worker thread waits on a slow charge; the service still
    answers its probes, scrapes and switch, and switching off speeds the charges up."""
    from live_app.card_processor import CardSettings, EmbeddedCardProcessor

    card = EmbeddedCardProcessor(CardSettings(slow_ms=4000.0, ramp_s=0.0, sigma=0.0))
    s = replace(settings, database_url=f"sqlite:///{tmp_path / 'card.db'}",
                card_processor_url=card.url)
    pay = ThreadPoolExecutor(max_workers=60)
    try:
        with serving(s) as url:
            assert requests.post(f"{url}/incident", json={"mode": "upstream_latency"},
                                 timeout=1).status_code == 200
            waiting = _fill_the_threads(pay, url, _active_posts)
            assert requests.get(f"{url}/health", timeout=1).status_code == 200
            assert requests.get(f"{url}/incident", timeout=1).json()["mode"] == \
                "upstream_latency"
            off = requests.post(f"{url}/incident", json={"mode": "normal"}, timeout=1)
            assert off.status_code == 200 and card.app.state.behaviour.mode == "normal"
            assert [f.result().status_code for f in waiting] == [200] * 50
    finally:
        pay.shutdown(wait=False, cancel_futures=True)
        card.stop()


def _active_posts(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=1).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("http_server_active_requests{")
               and 'http_request_method="POST"' in line)
