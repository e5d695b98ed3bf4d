"""Benchmarks: figures as ratios against baselines measured in the same run.

    python -m benchmarks.run            # full size (by hand)
    python -m benchmarks.run --small    # reduced size (what CI runs, correctness only)

Prints a table and writes benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.naive import naive_write_request
from generator import generate
from generator.model import Series
from replayer.prometheus import PushOptions, ServerInfo, push_metrics
from replayer.remote_write.encode import (
    HEADERS,
    SeriesEncoder,
    compress,
    plan_pieces,
)
from replayer.report import SignalReport
from replayer.timeshift import shift
from replayer.transport import HttpTransport, TargetConfig

RESULTS = Path(__file__).resolve().parent / "results"


def best_of(n: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def replicas(copies: int, end_ns: int) -> tuple[list[Series], object]:
    inc = generate("slow_query", seed=1, duration_ms=3_600_000)
    out: list[Series] = []
    for i in range(copies):
        out.extend(shift(inc, end_ns, {"replica": f"r{i:04d}"}).series)
    return out, inc


def bench_generation(rounds: int) -> dict[str, float]:
    inc = generate("slow_query", seed=1, duration_ms=3_600_000)
    secs = best_of(rounds, lambda: generate("slow_query", seed=1, duration_ms=3_600_000))
    return {"seconds_1h_slow_query": secs, "samples_per_s": inc.sample_count / secs,
            "log_lines_per_s": inc.log_line_count / secs, "spans_per_s": inc.span_count / secs,
            "samples": inc.sample_count, "log_lines": inc.log_line_count,
            "spans": inc.span_count}


def bench_encode(series: list[Series], batch: int, rounds: int) -> dict[str, float]:
    pieces = plan_pieces(series, batch)
    batches = [pieces[i:i + 50] for i in range(0, len(pieces), 50)]
    enc = SeriesEncoder(series)
    samples = sum(len(s) for s in series)
    fast = best_of(rounds, lambda: [enc.write_request(b) for b in batches])
    naive = best_of(1, lambda: [naive_write_request(series, b) for b in batches])
    assert enc.write_request(batches[0]) == naive_write_request(series, batches[0])
    return {"fast_samples_per_s": samples / fast, "naive_samples_per_s": samples / naive,
            "ratio_fast_over_naive": naive / fast}


def bench_prometheus(series: list[Series], families, concurrency: int,  # type: ignore[no-untyped-def]
                     batch: int, end_ms: int) -> dict[str, float]:
    from tests.integration.prometheus_server import query, running_prometheus

    samples = sum(len(s) for s in series)
    half = len(series) // 2
    ceiling_part, e2e_part = series[:half], series[half:]
    with tempfile.TemporaryDirectory() as tmp, running_prometheus(Path(tmp)) as url:
        transport = HttpTransport(TargetConfig(url), pool_size=concurrency + 1)
        # (a) ceiling: the same kind of data, encoded beforehand, posted with the same lanes
        enc = SeriesEncoder(ceiling_part)
        pieces = plan_pieces(ceiling_part, batch)
        lanes: list[list[bytes]] = [[] for _ in range(concurrency)]
        for i in range(0, len(pieces), max(1, batch // 241)):
            group = pieces[i:i + max(1, batch // 241)]
            lanes[(i // max(1, batch // 241)) % concurrency].append(
                compress(enc.write_request(group)))

        def post_all(bodies: list[bytes]) -> None:
            for body in bodies:
                r, _ = transport.post("api/v1/write", body, HEADERS)
                assert r.status == 204, r.body

        t = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(post_all, lanes))
        ceiling = time.perf_counter() - t
        ceiling_samples = sum(len(s) for s in ceiling_part)
        # (b) end to end: encode and send through the real push path
        from generator.model import Incident

        inc = Incident("bench", 1, 3_600_000, 15_000, families, tuple(e2e_part), (), (),
                       None)  # type: ignore[arg-type]
        report = SignalReport("metrics", "samples")
        info = ServerInfo("2.42", True, True, 7_200_000, end_ms)
        t = time.perf_counter()
        push_metrics(transport, inc, info, PushOptions(max_samples=batch,
                                                       concurrency=concurrency), report,
                     end_ms - 3_600_000, end_ms)
        e2e = time.perf_counter() - t
        assert not report.lost and report.accepted == sum(len(s) for s in e2e_part)
        stored = query(url, 'count_over_time({__name__="up"}[2h])', end_ms / 1000)
        assert sum(int(x["value"][1]) for x in stored) == sum(
            len(s) for s in series if s.name == "up")
        transport.close()
    return {"ceiling_samples_per_s": ceiling_samples / ceiling,
            "end_to_end_samples_per_s": report.accepted / e2e,
            "ratio_end_to_end_over_ceiling": (report.accepted / e2e) / (ceiling_samples / ceiling),
            "samples": samples, "concurrency": concurrency}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="reduced size, for CI")
    args = ap.parse_args()
    copies, rounds = (4, 1) if args.small else (80, 3)
    end_ms = (time.time_ns() // 1_000_000) // 60_000 * 60_000
    series, inc = replicas(copies, end_ms * 1_000_000)
    results = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor()
                    or platform.machine(), "cores": __import__("os").cpu_count()},
        "size": "small" if args.small else "full",
        "generation": bench_generation(rounds),
        "remote_write_encode": bench_encode(series, 5000, rounds),
        "prometheus_load": bench_prometheus(series, inc.families, 4, 5000, end_ms),
    }
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    g, e, p = results["generation"], results["remote_write_encode"], results["prometheus_load"]
    print(f"{'figure':<52}{'value':>14}")
    rows = [
        ("generate 1 h slow_query at 15 s (s)", f"{g['seconds_1h_slow_query']:.3f}"),
        ("  samples/s | log lines/s | spans/s",
         f"{g['samples_per_s']:.3g} | {g['log_lines_per_s']:.3g} | {g['spans_per_s']:.3g}"),
        ("remote-write encode: fast / naive protobuf", f"{e['ratio_fast_over_naive']:.1f}x"),
        ("Prometheus load: end-to-end / pre-encoded ceiling",
         f"{p['ratio_end_to_end_over_ceiling']:.2f}"),
        (f"  samples pushed ({p['samples']}), peak RSS MB", f"{results['peak_rss_mb']:.0f}"),
    ]
    for name, value in rows:
        print(f"{name:<52}{value:>14}")


if __name__ == "__main__":
    main()
