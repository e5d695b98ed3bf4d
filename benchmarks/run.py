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
    fast = best_of(rounds, lambda: [TraceEncoder(tables).request(b) for b in tb])
    naive = best_of(rounds, lambda: [naive_otlp_request(tables, b) for b in tb])
    sdk = best_of(1, lambda: sdk_export_spans(tables))
    spans = shifted.span_count
    out["otlp"] = {"fast_per_s": spans / fast, "naive_per_s": spans / naive,
                   "sdk_per_s": spans / sdk, "ratio_fast_over_naive": naive / fast,
                   "ratio_fast_over_sdk": sdk / fast, "unit": "spans"}
    return out


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


def ceiling_vs_load(start_server, ceiling, load, unit: str,  # type: ignore[no-untyped-def]
                    count: int) -> dict[str, float]:
    """Time ``ceiling(server)`` (the same data pre-encoded, posted with the same
    concurrency) and ``load(server)`` (the replayer's own path), each into its own fresh
    server started by ``start_server(tmp_dir)``; both check what the server took."""
    took = {}
    for way, run in (("ceiling", ceiling), ("end_to_end", load)):
        with tempfile.TemporaryDirectory() as tmp, start_server(Path(tmp)) as server:
            took[way] = run(server)
    return {unit: count, f"ceiling_{unit}_per_s": count / took["ceiling"],
            f"end_to_end_{unit}_per_s": count / took["end_to_end"],
            "ratio_end_to_end_over_ceiling": took["ceiling"] / took["end_to_end"]}


def bench_prometheus(series: list[Series], families, concurrency: int,  # type: ignore[no-untyped-def]
                     batch: int, end_ms: int) -> dict[str, float]:
    """Pre-encoded bodies posted from `concurrency` threads (the ceiling), then
    `push_metrics` with as many lanes."""
    from tests.integration.prometheus_server import query, running_prometheus

    part = series[:len(series) // 2]
    samples = sum(len(s) for s in part)
    enc = SeriesEncoder(part)
    pieces = plan_pieces(part, batch)
    per = max(1, batch // 241)
    lanes: list[list[bytes]] = [[] for _ in range(concurrency)]
    for n, i in enumerate(range(0, len(pieces), per)):
        lanes[n % concurrency].append(compress(enc.write_request(pieces[i:i + per])))

    def timed(send: Callable[[HttpTransport], None]) -> Callable[[str], float]:
        def run(url: str) -> float:
            transport = HttpTransport(TargetConfig(url), pool_size=concurrency + 1)
            start = time.perf_counter()
            send(transport)
            took = time.perf_counter() - start
            stored = query(url, 'count_over_time({__name__="up"}[2h])', end_ms / 1000)
            assert sum(int(x["value"][1]) for x in stored) == sum(
                len(s) for s in part if s.name == "up"), "Prometheus does not hold every sample"
            transport.close()
            return took
        return run

    def ceiling(transport: HttpTransport) -> None:
        def post_all(bodies: list[bytes]) -> None:
            for body in bodies:
                r, _ = transport.post("api/v1/write", body, HEADERS)
                assert r.status == 204, r.body

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(post_all, lanes))

    def load(transport: HttpTransport) -> None:
        inc = Incident("bench", 1, 3_600_000, 15_000, families, tuple(part), (), (),
                       None)  # type: ignore[arg-type]
        report = SignalReport("metrics", "samples")
        push_metrics(transport, inc, ServerInfo("2.42", True, True, 7_200_000, end_ms),
                     PushOptions(max_samples=batch, concurrency=concurrency), report,
                     end_ms - 3_600_000, end_ms)
        assert not report.lost and report.accepted == samples, report.lines()

    out = ceiling_vs_load(running_prometheus, timed(ceiling), timed(load), "samples", samples)
    return {**out, "concurrency": concurrency}


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


def bench_loki(copies: int, end_ms: int) -> dict[str, float]:
    """Loki, the same entries: pre-encoded and posted one request at a time (the ceiling),
    then `push_logs` (encode, pace off, post), as the replayer sends logs."""
    from replayer.loki.push import LokiOptions, preflight, push_logs
    from tests.integration.backends import running_loki

    incs = _incident_copies(max(2, copies // 8), end_ms)
    lines = sum(i.log_line_count for i in incs)
    bodies = [compress_loki(proto_request(s, b.lo, b.hi)) for inc in incs
              for s in inc.log_streams for b in loki_batches([s], 5000, 1 << 20)]

    def timed(send: Callable[[HttpTransport, SignalReport], None]) -> Callable[[str], float]:
        def run(url: str) -> float:
            t = HttpTransport(TargetConfig(url))
            report = SignalReport("logs", "lines")
            start = time.perf_counter()
            send(t, report)
            took = time.perf_counter() - start
            t.close()
            return took
        return run

    def ceiling(t: HttpTransport, _report: SignalReport) -> None:
        for body in bodies:
            r, _ = t.post("loki/api/v1/push", body, LOKI_HEADERS)
            assert r.status == 204, r.body

    def load(t: HttpTransport, report: SignalReport) -> None:
        info = preflight(t)
        for inc in incs:
            push_logs(t, inc.log_streams, LokiOptions(rate_bytes_s=0), info, report)
        assert not report.lost and report.accepted == lines, report.lines()

    return ceiling_vs_load(running_loki, timed(ceiling), timed(load), "lines", lines)


def bench_tempo(copies: int, end_ms: int) -> dict[str, float]:
    """Tempo over OTLP gRPC, the same spans: pre-encoded requests (the ceiling), then
    `push_traces`."""
    from replayer.otlp.push import GrpcTraces, push_traces
    from tests.integration.backends import running_tempo

    incs = _incident_copies(max(2, copies // 8), end_ms)
    spans = sum(i.span_count for i in incs)
    bodies = [TraceEncoder(inc.span_tables).request(b) for inc in incs
              for b in span_batches(inc.span_tables, 2000)]

    def timed(send: Callable[[GrpcTraces], None]) -> Callable[[tuple[str, str]], float]:
        def run(urls: tuple[str, str]) -> float:
            exporter = GrpcTraces(TargetConfig(urls[0]))
            exporter.check(timeout_s=30)
            start = time.perf_counter()
            send(exporter)
            took = time.perf_counter() - start
            exporter.close()
            return took
        return run

    def ceiling(exporter: GrpcTraces) -> None:
        for body in bodies:
            answer = exporter.export(body)
            assert answer.ok and not answer.rejected_spans, answer.reason

    def load(exporter: GrpcTraces) -> None:
        report = SignalReport("traces", "spans")
        for inc in incs:
            push_traces(exporter, inc.span_tables, report)
        assert not report.lost and report.accepted == spans, report.lines()

    return ceiling_vs_load(running_tempo, timed(ceiling), timed(load), "spans", spans)


def median_run(runs: list[dict[str, float]]) -> dict[str, object]:
    """The run with the median end-to-end/ceiling ratio (the machine is shared with the
    server, so single runs vary by a few percent), with every run's ratio beside it."""
    ordered = sorted(runs, key=lambda r: r["ratio_end_to_end_over_ceiling"])
    chosen: dict[str, object] = dict(ordered[len(ordered) // 2])
    chosen["ratios_of_all_runs"] = [round(r["ratio_end_to_end_over_ceiling"], 3) for r in runs]
    return chosen


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
                 "--prometheus-url", url, "--json"], stdout=subprocess.PIPE,
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


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--small", action="store_true", help="reduced size, for CI")
    args = ap.parse_args()
    copies, rounds = (2, 1) if args.small else (60, 3)
    scale = ("2h", 2) if args.small else ("24h", 28)
    end_ms = (time.time_ns() // 1_000_000) // 60_000 * 60_000
    series, inc = replicas(copies, end_ms * 1_000_000)
    results: dict[str, object] = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor()
                    or platform.machine(), "cores": os.cpu_count()},
        "size": "small" if args.small else "full",
        "generation": bench_generation(rounds),
        "encode": bench_encoders(series, inc, rounds),
        "prometheus_load": median_run(
            [bench_prometheus(series, inc.families, 4, 20000, end_ms) for _ in range(rounds)]),
        "promtool": bench_promtool(series[len(series) // 2:]),
        "loki_load": median_run([bench_loki(copies, end_ms) for _ in range(rounds)])
        if _binary("loki") else "not measured: no loki binary on PATH (or LOKI_BIN)",
        "tempo_load": median_run([bench_tempo(copies, end_ms) for _ in range(rounds)])
        if _binary("tempo") else "not measured: no tempo binary on PATH (or TEMPO_BIN)",
        "scale": bench_scale(*scale),
    }
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def print_table(r: dict) -> None:  # type: ignore[type-arg]
    g, e, p, s = r["generation"], r["encode"], r["prometheus_load"], r["scale"]
    rows = [
        ("generate 1 h of slow_query at 15 s", f"{g['seconds_1h_slow_query']:.2f} s"),
        ("remote-write encoder / naive (samples)",
         f"{e['remote_write']['ratio_fast_over_naive']:.1f}x"),
        ("Loki encoder / naive (lines)", f"{e['loki']['ratio_fast_over_naive']:.1f}x"),
        ("OTLP encoder / naive (spans)", f"{e['otlp']['ratio_fast_over_naive']:.1f}x"),
        ("OTLP encoder / OTel SDK create+export (spans)",
         f"{e['otlp']['ratio_fast_over_sdk']:.1f}x"),
        ("Prometheus load end-to-end / pre-encoded ceiling",
         f"{p['ratio_end_to_end_over_ceiling']:.2f}"),
    ]
    if isinstance(r["promtool"], dict):
        rows.append(("Prometheus load / promtool create-blocks (samples/s)",
                     f"{p['end_to_end_samples_per_s'] / r['promtool']['samples_per_s']:.1f}x"))
    for signal in ("loki_load", "tempo_load"):
        value = r[signal]
        rows.append((f"{signal.split('_')[0].title()} load end-to-end / pre-encoded ceiling",
                     f"{value['ratio_end_to_end_over_ceiling']:.2f}" if isinstance(value, dict)
                     else "not measured"))
    rows += [(f"scale: {s['instances']} copies x {s['duration']} ({s['samples']} samples)",
              f"peak RSS {s['peak_rss_mb']:.0f} MB"),
             ("scale: samples rejected", str(s["rejected"]))]
    width = max(len(a) for a, _ in rows) + 2
    for name, value in rows:
        print(f"{name:<{width}}{value:>16}")


if __name__ == "__main__":
    main()
