#!/usr/bin/env python3
"""Re-record the live fixtures recordings/live_<scenario>_postgres.jsonl.gz from real runs.

For each scenario live_app reproduces: a throwaway PostgreSQL cluster from Debian's
postgresql (seeded with history), live_app on it with the real OpenTelemetry SDK exporting
OTLP to `replayer capture`, the card processor as a service of its own, Debian's
prometheus-postgres-exporter scraped as job `postgres`, an open-loop traffic driver, and
the incident switched on and off through live_app's /incident endpoint. The PostgreSQL
server log of the window is recorded too. The header says what ran: versions, settings,
and the generator knobs the run corresponds to (the calibration tests generate with them).

    python scripts/record-live-fixture.py [SCENARIO ...] [--baseline 60] [--incident 90]
        [--recovery 50] [--rps 10] [--seed-rows 3000000]

Takes about four minutes a scenario on a 2-core machine; nothing else should run then
(the live latencies are the machine's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import requests
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generator.scenarios import SCENARIOS  # noqa: E402
from live_app.app import create_app  # noqa: E402
from live_app.card_processor import CardSettings  # noqa: E402
from live_app.local_postgres import running_exporter, running_postgres, server_version  # noqa: E402
from live_app.settings import Settings  # noqa: E402
from live_app.traffic import MIX, run_traffic  # noqa: E402
from replayer.record.capture import CaptureOptions, run_capture  # noqa: E402
from replayer.recording import write_recording  # noqa: E402

LIVE = {name: s.live_mode for name, s in SCENARIOS.items() if s.live_mode}
MAX_CONNECTIONS = 50  # live_app.local_postgres's cluster
# what each run changes from live_app's defaults (so the fault shows inside the window),
# and the generator knobs those settings are
RUN_SETTINGS: dict[str, dict[str, float]] = {
    # pooled connections older than 20 s are replaced: replacements the batch job refuses
    "too_many_clients": {"pool_recycle_s": 20.0},
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def card_processor(settings: CardSettings, otlp: str) -> Iterator[str]:
    """card-processor as its own process (its own interpreter, as in production); yields
    its base URL."""
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port),
           "OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "CARD_P50_MS": f"{settings.p50_ms:g}",
           "CARD_ERROR_RATIO": f"{settings.error_ratio:g}",
           "CARD_SLOW_MS": f"{settings.slow_ms:g}", "CARD_RAMP_SECONDS": f"{settings.ramp_s:g}"}
    proc = subprocess.Popen([sys.executable, "-m", "live_app.card_processor"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"card-processor exited with {proc.returncode}")
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass  # not listening yet: polled again until the deadline
            if time.monotonic() > deadline:
                raise SystemExit("card-processor did not answer /health within 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()  # uvicorn's graceful shutdown flushes its spans
        proc.wait(timeout=30)


def knobs_of(settings: Settings, card: CardSettings, rps: float, mode: str) -> dict[str, float]:
    """The generator knobs this run's settings are (the calibration generates with them)."""
    total = sum(w for _, _, w in MIX)
    share = {path: w / total for _, path, w in MIX}
    knobs: dict[str, float] = {
        "rps_post_payment": rps * share["/payment"],
        "rps_get_payment": rps * share["/payments/{id}"],
        "rps_health": rps * share["/health"],
        "pool_size": settings.pool_size, "max_overflow": settings.max_overflow,
        "pool_timeout_s": settings.pool_timeout_s, "max_connections": MAX_CONNECTIONS,
        "card_p50_ms": card.p50_ms, "pool_recycle_s": max(settings.pool_recycle_s, 0.0),
        "log_min_duration_statement_ms": 250,
    }
    if mode == "error_spike":
        knobs["error_ratio_peak"] = card.error_ratio
    elif mode == "upstream_latency":
        knobs["card_peak_ms"] = card.slow_ms
    elif mode == "pool_exhaustion":
        knobs["hold_extra_peak_ms"] = settings.hold_s * 1000
    elif mode == "connection_leak":
        knobs["leak_ratio_peak"] = settings.leak_ratio
    return knobs


def record(scenario: str, args: argparse.Namespace) -> tuple[Path, list[str]]:
    mode = LIVE[scenario]
    out = args.output_dir / f"live_{scenario}_postgres.jsonl.gz"
    total = args.baseline + args.incident + args.recovery
    grpc_port, app_port = free_port(), free_port()
    otlp = f"http://127.0.0.1:{grpc_port}"
    card_settings = CardSettings()
    with running_postgres() as (database_url, pg_log), \
            running_exporter(database_url) as (exporter_url, exporter_version), \
            card_processor(card_settings, otlp) as card_url:
        # a payments table with history: without its index, the lookup scans all of it
        settings = replace(Settings(database_url=database_url, seed_rows=args.seed_rows,
                                    otlp_endpoint=otlp, card_processor_url=card_url),
                           **RUN_SETTINGS.get(scenario, {}))
        # log level info: uvicorn's access lines are exported records, as in production
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1",
                                               port=app_port, log_level="info"))
        serving = threading.Thread(target=server.run, daemon=True)
        serving.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{app_port}"
        knobs = knobs_of(settings, card_settings, args.rps, mode)
        result: dict[str, object] = {}
        capture = threading.Thread(target=lambda: result.update(out=run_capture(CaptureOptions(
            duration_s=total, scrape_urls=(f"{url}/metrics", f"card-processor={card_url}/metrics",
                                           f"postgres={exporter_url}"),
            interval_s=args.interval, grpc_addr=f"127.0.0.1:{grpc_port}", http_addr=None,
            drain_s=3.0, incident_url=f"{url}/incident", name=f"live_{scenario}_postgres",
            postgres_log=str(pg_log), extra_source=(
                ("app", "live_app (FastAPI + SQLAlchemy, OpenTelemetry SDK) calling "
                        "card-processor over HTTP (httpx, instrumented)"),
                ("database", server_version()),
                ("postgres_exporter", exporter_version),
                ("scenario", scenario),
                ("incident", f"{mode} switched on via POST /incident after "
                             f"{args.baseline:g} s, off after {args.incident:g} s more"),
                ("traffic", f"open loop, Poisson arrivals, {args.rps:g} req/s"),
                ("seed_rows", str(args.seed_rows)),
                ("card_ramp_s", f"{card_settings.ramp_s:g}"),
                ("knobs", json.dumps(knobs, sort_keys=True)),
                ("script", "scripts/record-live-fixture.py"))))))
        capture.start()
        time.sleep(0.5)
        # open loop: arrivals keep coming whatever the latency (up to 400 in flight), as
        # users do; a closed loop would slow down with the service and hide the queue
        traffic = threading.Thread(target=run_traffic, kwargs={
            "url": url, "rps": args.rps, "duration_s": total - 1, "concurrency": 400,
            "poisson": True, "timeout_s": 60.0})
        traffic.start()
        time.sleep(args.baseline)
        # the switches may wait (DROP INDEX / CREATE INDEX on the seeded table, a lock queue
        # to form, connections to come back)
        requests.post(f"{url}/incident", json={"mode": mode}, timeout=120).raise_for_status()
        time.sleep(args.incident)
        requests.post(f"{url}/incident", json={"mode": "normal"},
                      timeout=120).raise_for_status()
        traffic.join()
        capture.join()
        server.should_exit = True
        serving.join(timeout=30)
    incident, problems = result["out"]  # type: ignore[misc]
    write_recording(incident, out)
    print(f"wrote {out}: {incident.sample_count} samples, {incident.log_line_count} "
          f"log lines, {incident.span_count} spans; truth: {incident.truth.summary}")
    return out, list(problems)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                    help=f"default: all of {', '.join(LIVE)}")
    ap.add_argument("--baseline", type=float, default=60.0, help="seconds before the incident")
    ap.add_argument("--incident", type=float, default=90.0, help="seconds of the incident")
    ap.add_argument("--recovery", type=float, default=50.0, help="seconds after it")
    ap.add_argument("--rps", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=5.0, help="scrape interval, seconds")
    ap.add_argument("--seed-rows", type=int, default=3_000_000,
                    help="payments in the table before traffic starts")
    ap.add_argument("--output-dir", type=Path, default=ROOT / "recordings")
    args = ap.parse_args()
    unknown = [s for s in args.scenarios if s not in LIVE]
    if unknown:
        ap.error(f"not reproducible live: {', '.join(unknown)}; choose from {', '.join(LIVE)}")
    os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "1000")
    os.environ.setdefault("OTEL_BLRP_SCHEDULE_DELAY", "1000")
    failed = 0
    for scenario in args.scenarios or list(LIVE):
        _out, problems = record(scenario, args)
        for p in problems:
            print(f"problem ({scenario}):", p)
        failed += bool(problems)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
