"""A bounded traffic driver for payment-service.

``python -m live_app.traffic --rps 20 --duration 2m --url http://127.0.0.1:8000`` (also
``replayer traffic``): an open-loop schedule of requests (POST /payment, GET /payments/{payment_id},
GET /health in the generator's mix), at most ``--concurrency`` in flight, stopping by itself
after ``--duration`` or ``--requests``. Prints the achieved rate and the status counts.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

MIX = (("POST", "/payment", 8.0), ("GET", "/payments/{id}", 5.0), ("GET", "/health", 0.2))
END_GRACE_S = 1.0  # how long after --duration an answer is still waited for


@dataclass
class TrafficResult:
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)  # "200", "500", "error: ..."
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    target_rps: float = 0.0
    concurrency: int = 0
    not_sent: int = 0  # due before the end, but every slot was still busy
    cut_at_end: int = 0  # still unanswered when the duration (plus a grace) ran out

    @property
    def achieved_rps(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def short(self) -> bool:
        """The app answered too slowly for the asked rate with this many in flight."""
        return bool(self.target_rps) and self.achieved_rps < 0.9 * self.target_rps

    def summary(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        out = (f"sent {self.sent} requests in {self.elapsed_s:.1f} s "
               f"({self.achieved_rps:.1f}/s); {counts}")
        if self.short:
            out += (f"\nwarning: {self.achieved_rps:.1f}/s of the {self.target_rps:g}/s asked "
                    f"({self.not_sent} requests not sent): all {self.concurrency} slots were busy "
                    "with slow answers; raise --concurrency, or lower --rps")
        if self.cut_at_end:
            out += (f"\nnote: {self.cut_at_end} requests still unanswered at the end were "
                    "given up (counted as errors)")
        return out


def offsets(rps: float, total: int, seed: int = 1, poisson: bool = False) -> list[float]:
    """Seconds from the start at which each request is due: evenly spaced at ``rps``, or
    with ``poisson`` at exponential gaps of the same mean (a seeded stream of its own)."""
    if not poisson:
        return [i / rps for i in range(total)]
    gaps = random.Random(seed + 1)
    out, t = [], 0.0
    for _ in range(total):
        out.append(t)
        t += gaps.expovariate(rps)
    return out


def run_traffic(url: str, rps: float, duration_s: float | None = None,
                requests_total: int | None = None, concurrency: int = 16, seed: int = 1,
                timeout_s: float = 35.0, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep,
                poisson: bool = False) -> TrafficResult:
    """Sends the requests on a fixed schedule (evenly spaced, or with ``poisson`` at
    exponential gaps of the same mean, as independent users arrive), whatever the answers
    take, with at most ``concurrency`` in flight.

    With ``duration_s`` it stops at the duration: a request due while every slot is busy
    at the end is not sent, and one still unanswered a second after the end is given up,
    so a slow app cannot stretch a 10 s run to a minute."""
    if rps <= 0:
        raise ValueError("--rps must be greater than 0")
    if duration_s is None and requests_total is None:
        raise ValueError("give --duration or --requests so the run stops by itself")
    total = requests_total if requests_total is not None else int(rps * float(duration_s or 0))
    rng = random.Random(seed)
    weights = [w for _, _, w in MIX]
    created: list[int] = []
    lock = threading.Lock()
    result = TrafficResult(target_rps=rps, concurrency=concurrency)
    deadline: float | None = None  # set once the clock starts, with duration_s
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=concurrency)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    base = url.rstrip("/")
    slots = threading.BoundedSemaphore(concurrency)

    def one(method: str, path: str, payload: dict | None) -> None:
        started = time.perf_counter()
        wait_s = timeout_s
        if deadline is not None:  # answered by the end (and a grace second), or given up
            wait_s = max(0.2, min(timeout_s, deadline + END_GRACE_S - clock()))
        try:
            r = session.request(method, base + path, json=payload, timeout=wait_s)
            key = str(r.status_code)
            if method == "POST" and r.status_code == 200:
                with lock:
                    created.append(int(r.json()["id"]))
        except requests.RequestException as exc:
            key = f"error: {type(exc).__name__}"
            if deadline is not None and wait_s < timeout_s and isinstance(
                    exc, requests.Timeout):
                with lock:
                    result.cut_at_end += 1
        finally:
            slots.release()
        with lock:
            result.statuses[key] += 1
            result.latencies_s.append(time.perf_counter() - started)

    start = clock()
    if duration_s is not None:
        deadline = start + float(duration_s)
    schedule = offsets(rps, total, seed, poisson)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for n, offset in enumerate(schedule):
            due = start + offset
            wait = due - clock()
            if wait > 0:
                sleep(wait)
            if deadline is not None:
                # a free slot before the end, or the run is over
                if not slots.acquire(timeout=max(0.0, deadline - clock())):
                    result.not_sent = len(schedule) - n
                    break
                slots.release()
            method, path, _ = rng.choices(MIX, weights)[0]
            payload = None
            if path == "/payment":
                payload = {"amount": f"{rng.uniform(1, 500):.2f}", "currency": "EUR"}
            elif "{id}" in path:
                with lock:
                    pid = rng.choice(created) if created and rng.random() > 0.02 else 10**9
                path = path.replace("{id}", str(pid))
            slots.acquire()  # bounded concurrency: wait for a free slot
            pool.submit(one, method, path, payload)
            result.sent += 1
        result.elapsed_s = clock() - start  # the rate is of the sending, not the last answer
    session.close()
    return result


def parse_duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    raise ValueError(f"{text!r} is not a duration like 90s, 2m or 1h")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m live_app.traffic", description=__doc__)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--rps", type=float, default=20.0)
    ap.add_argument("--duration", help="e.g. 2m")
    ap.add_argument("--requests", type=int)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--poisson", action="store_true",
                    help="exponential gaps between arrivals (same mean) instead of even ones")
    args = ap.parse_args(argv)
    try:
        duration = parse_duration(args.duration) if args.duration else None
        result = run_traffic(args.url, args.rps, duration, args.requests, args.concurrency,
                             args.seed, poisson=args.poisson)
    except ValueError as exc:
        ap.error(str(exc))
    print(result.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
