#!/usr/bin/env python3
"""Re-record recordings/live_slow_query_postgres.jsonl.gz from a real run.

live_app against a real PostgreSQL (a throwaway cluster from Debian's postgresql), real
OpenTelemetry SDK exporting OTLP to `replayer capture`, the traffic driver, and the
slow_query incident switched on and off through live_app's /incident endpoint. The
PostgreSQL server log of the window is recorded too.

    python scripts/record-live-fixture.py [--baseline 60] [--incident 90] [--recovery 50]
        [--seed-rows 3000000]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import requests
import uvicorn

from live_app.app import create_app
from live_app.local_postgres import running_postgres, server_version
from live_app.settings import Settings
from live_app.traffic import run_traffic
from replayer.record.capture import CaptureOptions, run_capture
from replayer.recording import write_recording

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "recordings" / "live_slow_query_postgres.jsonl.gz"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=float, default=60.0, help="seconds before the incident")
    ap.add_argument("--incident", type=float, default=90.0, help="seconds of slow_query")
    ap.add_argument("--recovery", type=float, default=50.0, help="seconds after it")
    ap.add_argument("--rps", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=5.0, help="scrape interval, seconds")
    ap.add_argument("--seed-rows", type=int, default=3_000_000,
                    help="payments in the table before traffic starts")
    ap.add_argument("-o", "--output", type=Path, default=OUT)
    args = ap.parse_args()
    os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "1000")
    os.environ.setdefault("OTEL_BLRP_SCHEDULE_DELAY", "1000")
    total = args.baseline + args.incident + args.recovery
    grpc_port, app_port = free_port(), free_port()
    with running_postgres() as (database_url, pg_log):
        # a payments table with history: without its index, the lookup scans all of it
        settings = Settings(database_url=database_url, seed_rows=args.seed_rows,
                            otlp_endpoint=f"http://127.0.0.1:{grpc_port}")
        # log level info: uvicorn's access lines are exported records, as in production
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1",
                                               port=app_port, log_level="info"))
        serving = threading.Thread(target=server.run, daemon=True)
        serving.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{app_port}"
        result: dict[str, object] = {}
        capture = threading.Thread(target=lambda: result.update(out=run_capture(CaptureOptions(
            duration_s=total, scrape_urls=(f"{url}/metrics",), interval_s=args.interval,
            grpc_addr=f"127.0.0.1:{grpc_port}", http_addr=None, drain_s=3.0,
            incident_url=f"{url}/incident", name="live_slow_query_postgres",
            postgres_log=str(pg_log), extra_source=(
                ("app", "live_app (FastAPI + SQLAlchemy, OpenTelemetry SDK)"),
                ("database", server_version()),
                ("incident", "slow_query switched on via POST /incident (drops the index "
                             "on payments.idempotency_key; restored when switched off)"),
                ("seed_rows", str(args.seed_rows)),
                ("script", "scripts/record-live-fixture.py"))))))
        capture.start()
        time.sleep(0.5)
        traffic = threading.Thread(target=run_traffic, kwargs={
            "url": url, "rps": args.rps, "duration_s": total - 1, "concurrency": 32})
        traffic.start()
        time.sleep(args.baseline)
        # the switches wait for DROP INDEX / CREATE INDEX on the seeded table
        requests.post(f"{url}/incident", json={"mode": "slow_query"}, timeout=120)
        time.sleep(args.incident)
        requests.post(f"{url}/incident", json={"mode": "normal"}, timeout=120)
        traffic.join()
        capture.join()
        server.should_exit = True
        serving.join(timeout=30)
    incident, problems = result["out"]  # type: ignore[misc]
    for p in problems:
        print("problem:", p)
    write_recording(incident, args.output)
    print(f"wrote {args.output}: {incident.sample_count} samples, {incident.log_line_count} "
          f"log lines, {incident.span_count} spans; truth: {incident.truth.summary}")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
