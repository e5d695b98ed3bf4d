"""Benchmarks: every figure beside a baseline measured in the same run, reported as ratios.

    python -m benchmarks.run            # full size, by hand (several minutes)
    python -m benchmarks.run --small    # reduced size: what CI runs; checks what was pushed

Prints a table and writes benchmarks/results/latest.json. Baselines:
(a) the server ceiling: the same kind of data encoded beforehand and posted with the same
    concurrency; (b) the naive encoders: one protobuf object per sample / line / span;
(c) the OpenTelemetry Python SDK creating and exporting the same spans; (d) promtool
    tsdb create-blocks-from openmetrics for the same samples.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.naive import (
    naive_loki_request,
    naive_otlp_request,
    naive_write_request,
    sdk_export_spans,
)
from generator import generate
from generator.model import Incident, Series
from replayer.loki.encode import PROTO_HEADERS as LOKI_HEADERS
from replayer.loki.encode import compress as compress_loki
from replayer.loki.encode import plan_batches as loki_batches
from replayer.loki.encode import proto_request
from replayer.loki.push import LOKI_CONCURRENCY
from replayer.otlp.encode import TraceEncoder
from replayer.otlp.encode import plan_batches as span_batches
from replayer.prometheus import PushOptions, ServerInfo, push_metrics
from replayer.remote_write.encode import HEADERS, SeriesEncoder, compress, plan_pieces
from replayer.report import SignalReport
from replayer.timeshift import shift
from replayer.transport import HttpTransport, TargetConfig

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def best_of(n: int, fn: Callable[[], object]) -> float:
    """The fastest of ``n`` calls, with the garbage collector off while timing (as timeit
    does: a collection started by one side's garbage would be charged to whichever runs
    then). Both sides of every encoder ratio are timed this way."""
    times = []
    for _ in range(n):
        gc.collect()
        gc.disable()
        try:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        finally:
            gc.enable()
    return min(times)


def replicas(copies: int, end_ns: int) -> tuple[list[Series], Incident]:
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


def bench_encoders(series: list[Series], inc: Incident, rounds: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    pieces = plan_pieces(series, 5000)
    groups = [pieces[i:i + 25] for i in range(0, len(pieces), 25)]
    enc = SeriesEncoder(series)
    samples = sum(len(s) for s in series)
    assert enc.write_request(groups[0]) == naive_write_request(series, groups[0])
    # one encoder for all requests, as a load uses (it encodes shared time grids once)
    fast = best_of(rounds, lambda: (lambda e: [e.write_request(g) for g in groups])(
        SeriesEncoder(series)))
    naive = best_of(rounds, lambda: [naive_write_request(series, g) for g in groups])
    out["remote_write"] = {"fast_per_s": samples / fast, "naive_per_s": samples / naive,
                           "ratio_fast_over_naive": naive / fast, "unit": "samples"}
    shifted = shift(inc, 1_795_778_400_000 * 1_000_000)
    streams = shifted.log_streams
    lb = list(loki_batches(streams, 5000, 1 << 20))
    b0 = lb[0]
    assert proto_request(streams[b0.stream], b0.lo, b0.hi) == naive_loki_request(
        streams[b0.stream], b0.lo, b0.hi)
    fast = best_of(rounds, lambda: [proto_request(streams[b.stream], b.lo, b.hi) for b in lb])
    naive = best_of(rounds, lambda: [naive_loki_request(streams[b.stream], b.lo, b.hi)
                                     for b in lb])
    lines = shifted.log_line_count
    out["loki"] = {"fast_per_s": lines / fast, "naive_per_s": lines / naive,
                   "ratio_fast_over_naive": naive / fast, "unit": "lines"}
    tables = shifted.span_tables
    tb = list(span_batches(tables, 2000))
    assert TraceEncoder(tables).request(tb[0]) == naive_otlp_request(tables, tb[0])
    # one encoder for all of a pass's requests, as push_traces has: a request holds whole
    # traces, so it draws on every table, and an encoder lays out each table once
    fast = best_of(rounds, lambda: _encode_all(TraceEncoder(tables), tb))
    naive = best_of(rounds, lambda: [naive_otlp_request(tables, b) for b in tb])
    sdk = best_of(1, lambda: sdk_export_spans(tables))
    spans = shifted.span_count
    out["otlp"] = {"fast_per_s": spans / fast, "naive_per_s": spans / naive,
                   "sdk_per_s": spans / sdk, "ratio_fast_over_naive": naive / fast,
                   "ratio_fast_over_sdk": sdk / fast, "unit": "spans"}
    return out


def _encode_all(encoder: TraceEncoder, plan: list) -> list[bytes]:
    return [encoder.request(b) for b in plan]


def write_openmetrics(series: list[Series], path: Path) -> int:
    """The samples as OpenMetrics text, families together, each series in time order."""
    by_name: dict[str, list[Series]] = {}
    for s in series:
        by_name.setdefault(s.name, []).append(s)
    n = 0
    with open(path, "w") as f:
        for name in sorted(by_name):
            for s in by_name[name]:
                labels = ",".join(f'{k}="{v}"' for k, v in s.labels if k != "__name__")
                head = f"{name}{{{labels}}} "
                for t, v in zip(s.t_ms.tolist(), s.values.tolist()):
                    f.write(f"{head}{v!r} {t / 1000:.3f}\n")
                n += len(s)
        f.write("# EOF\n")
    return n


def bench_promtool(series: list[Series]) -> dict[str, float] | str:
    promtool = shutil.which("promtool")
    if promtool is None:
        return "promtool not on PATH (Debian package prometheus)"
    with tempfile.TemporaryDirectory() as tmp:
        om = Path(tmp) / "samples.om"
        n = write_openmetrics(series, om)
        t = time.perf_counter()
        out = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(om),
                              str(Path(tmp) / "blocks")], capture_output=True, text=True,
                             timeout=3600)
        secs = time.perf_counter() - t
        if out.returncode != 0:
            return f"promtool failed: {out.stderr[-500:]}"
    return {"samples_per_s": n / secs, "samples": n}


def post_lanes(bodies: list, concurrency: int, post: Callable[[object], None]) -> None:
    """Post pre-encoded ``bodies`` from ``concurrency`` threads, each taking them in turn."""
    if concurrency == 1:
        for body in bodies:
            post(body)
        return
    def run_lane(lane: list) -> None:
        for body in lane:
            post(body)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(run_lane, [bodies[i::concurrency] for i in range(concurrency)]))


def against_best_ceiling(start_server, ceilings, load, unit: str,  # type: ignore[no-untyped-def]
                         count: int, rounds: int) -> dict[str, object]:
    """The replayer's load against the server's best ceiling. ``ceilings`` maps a way of
    posting the same data pre-encoded (a concurrency, a request size) to ``run(server) ->
    (seconds, cpu_seconds)``; ``load`` is the replayer's own path, the same way. Every
    run goes into its own fresh server started by ``start_server(tmp_dir)``, and each run
    checks what the server took. The runs are interleaved, one of each way a round with the
    order turned each round, so the machine's noise falls on every way alike; the median of
    the rounds is compared, and the spread kept."""
    ways = [*ceilings.items(), ("end_to_end", load)]
    rates: dict[str, list[float]] = {name: [] for name, _ in ways}
    cpu: dict[str, list[float]] = {name: [] for name, _ in ways}
    for r in range(rounds):
        k = r % len(ways)
        for name, run in ways[k:] + ways[:k]:
            with tempfile.TemporaryDirectory() as tmp, start_server(Path(tmp)) as server:
                took, used = run(server)
            rates[name].append(count / took)
            cpu[name].append(used)

    def median(v: list[float]) -> float:
        return sorted(v)[len(v) // 2]

    ceiling_med = {name: median(rates[name]) for name in ceilings}
    best = max(ceiling_med, key=ceiling_med.__getitem__)
    e2e = median(rates["end_to_end"])
    return {unit: count, "rounds": rounds,
            "ceilings_per_s": {name: {"median": ceiling_med[name], "min": min(rates[name]),
                                      "max": max(rates[name])} for name in ceilings},
            "best_ceiling": best, f"best_ceiling_{unit}_per_s": ceiling_med[best],
            f"end_to_end_{unit}_per_s": e2e,
            "end_to_end_spread": [min(rates["end_to_end"]), max(rates["end_to_end"])],
            "ratio_end_to_end_over_best_ceiling": e2e / ceiling_med[best],
            "ratios_of_all_rounds": [round(x / ceiling_med[best], 3)
                                     for x in rates["end_to_end"]],
            "cpu_s_per_million": median(cpu["end_to_end"]) / count * 1e6,
            # the client's CPU posting the best ceiling's bodies: what the server's share of
            # the machine loses to our encoding is the difference
            "ceiling_cpu_s_per_million": median(cpu[best]) / count * 1e6}


def _cpu_timed(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: every thread) of ``fn()``."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


CONCURRENCIES = (1, 2, 4, 8)


def bench_prometheus(series: list[Series], families, concurrency: int,  # type: ignore[no-untyped-def]
                     batch: int, end_ms: int, rounds: int,
                     concurrencies: tuple[int, ...] = CONCURRENCIES) -> dict[str, object]:
    """Pre-encoded bodies posted from 1, 2, 4 and 8 threads (the ceilings), against
    `push_metrics` as `load` runs it (``concurrency`` lanes of ``batch`` samples)."""
    from tests.integration.prometheus_server import query, running_prometheus

    part = series[:len(series) // 2]
    samples = sum(len(s) for s in part)
    enc = SeriesEncoder(part)
    pieces = plan_pieces(part, batch)
    per = max(1, batch // 241)
    bodies = [compress(enc.write_request(pieces[i:i + per]))
              for i in range(0, len(pieces), per)]

    def checked(url: str) -> None:
        stored = query(url, 'count_over_time({__name__="up"}[2h])', end_ms / 1000)
        assert sum(int(x["value"][1]) for x in stored) == sum(
            len(s) for s in part if s.name == "up"), "Prometheus does not hold every sample"

    def ceiling(lanes: int) -> Callable[[str], tuple[float, float]]:
        def run(url: str) -> tuple[float, float]:
            transport = HttpTransport(TargetConfig(url), pool_size=lanes + 1)

            def post(body: object) -> None:
                r, _ = transport.post("api/v1/write", body, HEADERS)  # type: ignore[arg-type]
                assert r.status == 204, r.body

            took = _cpu_timed(lambda: post_lanes(bodies, lanes, post))
            transport.close()
            checked(url)
            return took
        return run

    def load(url: str) -> tuple[float, float]:
        transport = HttpTransport(TargetConfig(url), pool_size=concurrency + 1)
        inc = Incident("bench", 1, 3_600_000, 15_000, families, tuple(part), (), (),
                       None)  # type: ignore[arg-type]
        report = SignalReport("metrics", "samples")
        took = _cpu_timed(lambda: push_metrics(
            transport, inc, ServerInfo("2.42", True, True, 7_200_000, end_ms),
            PushOptions(max_samples=batch, concurrency=concurrency), report,
            end_ms - 3_600_000, end_ms))
        assert not report.lost and report.accepted == samples, report.lines()
        transport.close()
        checked(url)
        return took

    out = against_best_ceiling(running_prometheus,
                               {f"{c} lanes": ceiling(c) for c in concurrencies}, load,
                               "samples", samples, rounds)
    return {**out, "concurrency": concurrency, "batch": batch}


def _watch_peak_rss(pid: int, proc: subprocess.Popen) -> float:
    """The child's own peak RSS (VmHWM) in MB, read until it exits (the Prometheus it loads
    into is another child, so RUSAGE_CHILDREN would count that too)."""
    peak = 0.0
    status = Path(f"/proc/{pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    return peak


def _binary(name: str) -> bool:
    return bool(os.environ.get(f"{name.upper()}_BIN") or shutil.which(name))


def _incident_copies(copies: int, end_ms: int) -> list[Incident]:
    """Copies of 1 h of slow_query with their own stream labels and trace IDs."""
    from replayer.traceids import salt_of, salt_trace_ids

    inc = generate("slow_query", seed=1, duration_ms=3_600_000)
    return [shift(salt_trace_ids(inc, salt_of(f"r{i}")), end_ms * 1_000_000,
                  {"replica": f"r{i:04d}"}) for i in range(copies)]


def bench_loki(copies: int, end_ms: int, concurrency: int, rounds: int,
               concurrencies: tuple[int, ...] = CONCURRENCIES) -> dict[str, object]:
    """Loki, the same entries pre-encoded in requests of 5,000 and of 10,000 entries
    (about 1 and 2 MB: a push of over 4 MB is refused, its distributor forwarding it to the
    ingester in one gRPC message) and posted from 1, 2, 4 and 8 threads (the ceilings),
    against `push_logs` as `load` runs it (``concurrency`` lanes, pacing off)."""
    from replayer.loki.push import LokiOptions, preflight, push_logs
    from tests.integration.backends import running_loki

    incs = _incident_copies(max(2, copies // 8), end_ms)
    lines = sum(i.log_line_count for i in incs)
    sizes = {5000: 1 << 20, 10000: 2 << 20}
    bodies = {n: [compress_loki(proto_request(s, b.lo, b.hi)) for inc in incs
                  for s in inc.log_streams for b in loki_batches([s], n, size)]
              for n, size in sizes.items()}

    def ceiling(lanes: int, n: int) -> Callable[[str], tuple[float, float]]:
        def run(url: str) -> tuple[float, float]:
            t = HttpTransport(TargetConfig(url), pool_size=lanes + 1)

            def post(body: object) -> None:
                r, _ = t.post("loki/api/v1/push", body, LOKI_HEADERS)  # type: ignore[arg-type]
                assert r.status == 204, r.body

            took = _cpu_timed(lambda: post_lanes(bodies[n], lanes, post))
            t.close()
            return took
        return run

    def load(url: str) -> tuple[float, float]:
        t = HttpTransport(TargetConfig(url), pool_size=concurrency + 1)
        report = SignalReport("logs", "lines")
        info = preflight(t)

        def push() -> None:
            for inc in incs:
                push_logs(t, inc.log_streams, LokiOptions(rate_bytes_s=0,
                                                          concurrency=concurrency), info, report)

        took = _cpu_timed(push)
        assert not report.lost and report.accepted == lines, report.lines()
        t.close()
        return took

    ways = {f"{c} lanes x {n} entries": ceiling(c, n) for c in concurrencies for n in sizes}
    out = against_best_ceiling(running_loki, ways, load, "lines", lines, rounds)
    return {**out, "concurrency": concurrency}


def bench_tempo(copies: int, end_ms: int, concurrency: int, rounds: int,
                concurrencies: tuple[int, ...] = CONCURRENCIES) -> dict[str, object]:
    """Tempo over OTLP gRPC, the same spans pre-encoded in requests of 2,000 and of 500
    spans and exported from 1, 2, 4 and 8 threads (the ceilings), against `push_traces` as
    `load` runs it (``concurrency`` lanes)."""
    from replayer.otlp.push import GrpcTraces, push_traces
    from tests.integration.backends import running_tempo

    incs = _incident_copies(max(2, copies // 8), end_ms)
    spans = sum(i.span_count for i in incs)
    bodies = {n: [TraceEncoder(inc.span_tables).request(b) for inc in incs
                  for b in span_batches(inc.span_tables, n)] for n in (2000, 500)}

    def ceiling(lanes: int, n: int) -> Callable[[tuple[str, str]], tuple[float, float]]:
        def run(urls: tuple[str, str]) -> tuple[float, float]:
            exporter = GrpcTraces(TargetConfig(urls[0]))
            exporter.check(timeout_s=30)

            def post(body: object) -> None:
                answer = exporter.export(body)  # type: ignore[arg-type]
                assert answer.ok and not answer.rejected_spans, answer.reason

            took = _cpu_timed(lambda: post_lanes(bodies[n], lanes, post))
            exporter.close()
            return took
        return run

    def load(urls: tuple[str, str]) -> tuple[float, float]:
        exporter = GrpcTraces(TargetConfig(urls[0]))
        exporter.check(timeout_s=30)
        report = SignalReport("traces", "spans")

        def push() -> None:
            for inc in incs:
                push_traces(exporter, inc.span_tables, report, concurrency=concurrency)

        took = _cpu_timed(push)
        assert not report.lost and report.accepted == spans, report.lines()
        exporter.close()
        return took

    ways = {f"{c} lanes x {n} spans": ceiling(c, n) for c in concurrencies for n in bodies}
    out = against_best_ceiling(running_tempo, ways, load, "spans", spans, rounds)
    return {**out, "concurrency": concurrency}


def bench_visible(step_s: int = 15) -> dict[str, float] | str:
    """Time to visible: from `replayer load slow_query --duration 1h` starting (a new
    process, as a user runs it) until the ground truth's first PromQL, LogQL and TraceQL
    queries return the incident from fresh Prometheus, Loki and Tempo (the shipped
    configs); each backend is polled every 100 ms from the start."""
    if not (_binary("loki") and _binary("tempo")):
        return "not measured: needs loki and tempo binaries on PATH (or LOKI_BIN, TEMPO_BIN)"
    import threading

    import requests

    from replayer.timeshift import iso
    from tests.integration.backends import running_loki, running_tempo
    from tests.integration.prometheus_server import running_prometheus

    truth = generate("slow_query", seed=1, duration_ms=3_600_000,
                     signals=("metrics",)).truth
    end_ms = (time.time_ns() // 1_000_000) // (step_s * 1000) * step_s * 1000
    start_ms = end_ms - 3_600_000
    peak = next(p for p in truth.phases if p.name == "peak")
    at_peak = (start_ms + (peak.start_ms + peak.end_ms) // 2) / 1000

    def promql(url: str) -> bool:
        r = requests.get(f"{url}/api/v1/query", params={"query": truth.promql[0][1],
                                                        "time": at_peak}, timeout=5)
        return r.ok and bool(r.json()["data"]["result"])

    def logql(url: str) -> bool:
        r = requests.get(f"{url}/loki/api/v1/query_range", params={
            "query": truth.logql[0][1], "start": str(start_ms * 10**6),
            "end": str(end_ms * 10**6), "limit": "1"}, timeout=5)
        return r.ok and any(s["values"] for s in r.json()["data"]["result"])

    def traceql(url: str) -> bool:
        r = requests.get(f"{url}/api/search", params={
            "q": truth.traceql[0][1], "start": str(start_ms // 1000),
            "end": str(end_ms // 1000 + 1), "limit": "1"}, timeout=5)
        return r.ok and bool(r.json().get("traces"))

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for d in "plt":
            (tmp / d).mkdir()
        prom = stack.enter_context(running_prometheus(tmp / "p"))
        loki = stack.enter_context(running_loki(tmp / "l"))
        otlp, tempo_api = stack.enter_context(running_tempo(tmp / "t"))
        seen: dict[str, float] = {}
        t0 = time.perf_counter()
        deadline = t0 + 120

        def poll(name: str, probe: Callable[[str], bool], url: str) -> None:
            while time.perf_counter() < deadline:
                try:
                    if probe(url):
                        seen[name] = time.perf_counter() - t0
                        return
                except requests.RequestException:
                    pass  # not up to the query yet: asked again in 100 ms
                time.sleep(0.1)

        pollers = [threading.Thread(target=poll, args=a) for a in (
            ("promql", promql, prom), ("logql", logql, loki), ("traceql", traceql, tempo_api))]
        proc = subprocess.Popen(
            [sys.executable, "-m", "replayer.cli", "load", "slow_query", "--duration", "1h",
             "--end", iso(end_ms * 1_000_000), "--prometheus-url", prom, "--loki-url", loki,
             "--tempo-url", otlp], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT)
        for th in pollers:
            th.start()
        out, err = proc.communicate(timeout=300)
        load_s = time.perf_counter() - t0
        for th in pollers:
            th.join()
        if proc.returncode != 0:
            raise RuntimeError(out[-2000:] + err[-2000:])
    missing = {"promql", "logql", "traceql"} - set(seen)
    if missing:
        raise RuntimeError(f"not visible within 120 s: {sorted(missing)}")
    return {"load_s": load_s, **{f"{k}_visible_s": v for k, v in seen.items()},
            "all_visible_s": max(seen.values())}


def bench_scale(duration: str, instances: int) -> dict[str, float]:
    """`replayer load --instances N --duration D` into a real Prometheus, in a child
    process so its peak RSS is its own."""
    from tests.integration.prometheus_server import query, running_prometheus

    with tempfile.TemporaryDirectory() as tmp:
        cfg_dir = Path(tmp)
        with running_prometheus(cfg_dir, ooo_window="25h") as url:
            t = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "replayer.cli", "load", "slow_query", "--duration",
                 duration, "--instances", str(instances), "--signals", "metrics",
                 # the figure is the samples: 28 days of exemplars overflow Prometheus'
                 # 100,000-exemplar ring, which the summary (rightly) counts as a loss
                 "--no-exemplars", "--prometheus-url", url, "--json"], stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, cwd=ROOT)
            rss = _watch_peak_rss(proc.pid, proc)
            stdout, stderr = proc.communicate(timeout=7200)
            secs = time.perf_counter() - t
            if proc.returncode != 0:
                raise RuntimeError(stdout[-2000:] + stderr[-2000:])
            report = json.loads(stdout)["signals"][0]
            series = query(url, 'count({__name__=~".+", job!=""})', time.time())
    return {"instances": instances, "duration": duration, "series": int(series[0]["value"][1]),
            "samples": report["accepted"], "rejected": sum(report["rejected"].values()),
            "seconds": secs, "samples_per_s": report["accepted"] / secs,
            "peak_rss_mb": rss}


def bench_long_dry_run(duration: str, baseline: str) -> dict[str, object]:
    """`replayer load slow_query --dry-run --signals metrics --duration D` in a child
    process: its exit code, its own peak RSS, and what it said. D is long enough to go span
    by span; ``baseline`` is a window generated whole, measured the same way in the same
    run (memory follows the span, not the window)."""

    def one(window: str) -> dict[str, object]:
        t = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "replayer.cli", "load", "slow_query", "--dry-run",
             "--signals", "metrics", "--duration", window], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=ROOT)
        rss = _watch_peak_rss(proc.pid, proc)
        out, err = proc.communicate(timeout=3600)
        said = (out + err).strip().splitlines()
        return {"duration": window, "exit_code": proc.returncode, "peak_rss_mb": rss,
                "seconds": time.perf_counter() - t, "said": said[0] if said else ""}

    return {**one(duration), "baseline": one(baseline)}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--small", action="store_true", help="reduced size, for CI")
    ap.add_argument("--only", default="", help="comma-separated parts to run (e.g. "
                    "loki_load,visible); the others are left out of the results")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="the end-to-end runs' --concurrency (default: `replayer load`'s, "
                         "4, and 2 for Loki)")
    args = ap.parse_args()
    copies, rounds = (2, 1) if args.small else (60, 3)
    concurrencies = (1, 4) if args.small else CONCURRENCIES
    scale = ("2h", 2) if args.small else ("24h", 28)
    lanes = args.concurrency or PushOptions.concurrency
    loki_lanes = args.concurrency or LOKI_CONCURRENCY
    end_ms = (time.time_ns() // 1_000_000) // 60_000 * 60_000
    series, inc = replicas(copies, end_ms * 1_000_000)
    no = "not measured: no {0} binary on PATH (or {1}_BIN)"
    parts: dict[str, Callable[[], object]] = {
        "generation": lambda: bench_generation(rounds),
        "encode": lambda: bench_encoders(series, inc, rounds),
        "prometheus_load": lambda: bench_prometheus(series, inc.families, lanes, 20000, end_ms,
                                                    rounds, concurrencies),
        "promtool": lambda: bench_promtool(series[len(series) // 2:]),
        "loki_load": lambda: bench_loki(copies, end_ms, loki_lanes, rounds, concurrencies)
        if _binary("loki") else no.format("loki", "LOKI"),
        "tempo_load": lambda: bench_tempo(copies, end_ms, lanes, rounds, concurrencies)
        if _binary("tempo") else no.format("tempo", "TEMPO"),
        "visible": lambda: [bench_visible() for _ in range(rounds)],
        "scale": lambda: bench_scale(*scale),
        "long_dry_run": lambda: bench_long_dry_run(*(("50h", "1d") if args.small
                                                     else ("100d", "2d"))),
    }
    only = [p for p in args.only.split(",") if p] or list(parts)
    unknown = set(only) - set(parts)
    if unknown:
        ap.error(f"--only: no part {sorted(unknown)}; the parts are {', '.join(parts)}")
    results: dict[str, object] = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor()
                    or platform.machine(), "cores": os.cpu_count()},
        "size": "small" if args.small else "full",
    }
    RESULTS.mkdir(exist_ok=True)
    name = "latest.json" if len(only) == len(parts) else "partial.json"
    for part in (p for p in parts if p in only):
        results[part] = parts[part]()
        # written after each part: a failure late in a long run keeps what was measured
        (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def print_table(r: dict) -> None:  # type: ignore[type-arg]
    rows: list[tuple[str, str]] = []
    if "generation" in r:
        rows.append(("generate 1 h of slow_query at 15 s",
                     f"{r['generation']['seconds_1h_slow_query']:.2f} s"))
    if "encode" in r:
        e = r["encode"]
        rows += [("remote-write encoder / naive (samples)",
                  f"{e['remote_write']['ratio_fast_over_naive']:.1f}x"),
                 ("Loki encoder / naive (lines)", f"{e['loki']['ratio_fast_over_naive']:.1f}x"),
                 ("OTLP encoder / naive (spans)", f"{e['otlp']['ratio_fast_over_naive']:.1f}x"),
                 ("OTLP encoder / OTel SDK create+export (spans)",
                  f"{e['otlp']['ratio_fast_over_sdk']:.1f}x")]
    for signal, unit in (("prometheus_load", "samples"), ("loki_load", "lines"),
                         ("tempo_load", "spans")):
        if signal not in r:
            continue
        value = r[signal]
        title = signal.split("_")[0].title()
        if not isinstance(value, dict):
            rows.append((f"{title} load end-to-end / best ceiling", "not measured"))
            continue
        rows += [(f"{title} load end-to-end / best ceiling ({value['best_ceiling']})",
                  f"{value['ratio_end_to_end_over_best_ceiling']:.2f}"),
                 (f"{title} load: CPU-seconds per million {unit}",
                  f"{value['cpu_s_per_million']:.2f} s")]
    if isinstance(r.get("promtool"), dict) and isinstance(r.get("prometheus_load"), dict):
        ours = r["prometheus_load"]["end_to_end_samples_per_s"]
        rows.append(("Prometheus load / promtool create-blocks (samples/s)",
                     f"{ours / r['promtool']['samples_per_s']:.1f}x"))
    if isinstance(r.get("visible"), list) and r["visible"] and isinstance(r["visible"][0], dict):
        runs = sorted(v["all_visible_s"] for v in r["visible"])
        rows.append(("time to visible: 1 h of slow_query, all three backends",
                     f"{runs[len(runs) // 2]:.1f} s"))
    if "scale" in r:
        s = r["scale"]
        rows += [(f"scale: {s['instances']} copies x {s['duration']} ({s['samples']} samples)",
                  f"peak RSS {s['peak_rss_mb']:.0f} MB"),
                 ("scale: samples rejected", str(s["rejected"]))]
    if "long_dry_run" in r:
        d = r["long_dry_run"]
        for run in (d, d.get("baseline")):
            if isinstance(run, dict):
                rows.append((f"dry run, metrics, {run['duration']}: exit {run['exit_code']}, "
                             f"{run['seconds']:.0f} s", f"peak RSS {run['peak_rss_mb']:.0f} MB"))
    width = max(len(a) for a, _ in rows) + 2
    for name, value in rows:
        print(f"{name:<{width}}{value:>16}")


if __name__ == "__main__":
    main()
