"""`replayer load` against a real Prometheus 2.42 (Debian package), started per test."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from click.testing import CliRunner

from replayer.cli import cli
from replayer.load import LoadRequest, Targets, run_load
from replayer.prometheus import PushOptions
from replayer.timeshift import shift
from replayer.transport import TargetConfig
from tests.conftest import BUILT_IN, cached_incident

from .prometheus_server import query, query_range, running_prometheus

pytestmark = pytest.mark.integration
STEP_MS = 15_000


def fixed_end_ms() -> int:
    """A fixed, reproducible --end near now (Prometheus only takes recent samples)."""
    now_ms = time.time_ns() // 1_000_000
    return now_ms - now_ms % 60_000


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def load(url: str, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["load", *args, "--prometheus-url", url,
                                    "--signals", "metrics"])


def stored(url: str, name: str, end_ms: int, window_s: int) -> dict[tuple, dict[int, float]]:
    out = {}
    for r in query(url, f'{{__name__="{name}"}}[{window_s + 60}s]', end_ms / 1000):
        key = tuple(sorted(r["metric"].items()))
        out[key] = {int(round(float(t) * 1000)): float(v) for t, v in r["values"]}
    return out


def test_slow_query_appears_in_prometheus_with_every_sample(tmp_path: Path) -> None:
    end_ms = fixed_end_ms()
    inc = cached_incident("slow_query")
    start_ms = end_ms - inc.duration_ms
    with running_prometheus(tmp_path) as url:
        r = load(url, "slow_query", "--end", iso(end_ms))
        assert r.exit_code == 0, r.output
        assert f"accepted {inc.sample_count}" in r.output and "rejected 0" in r.output
        # the incident in clock time, and a link that shows the ground truth's first query
        # over exactly the loaded window (issue 18, defect 3)
        from replayer.cli_common import iso as iso_ns

        at = {k: iso_ns((start_ms + v) * 1_000_000) for k, v in (
                  ("onset", inc.truth.onset_ms), ("peak", inc.truth.peak_ms),
                  ("recovery", inc.truth.recovery_ms))}
        assert (f"incident   onset {at['onset']}, peak {at['peak']}, recovery "
                f"{at['recovery']} (root cause postgres / missing_index)") in r.output
        link = next(line.split(None, 1)[1] for line in r.output.splitlines()
                    if line.startswith("prometheus "))
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(link)
        assert f"{parts.scheme}://{parts.netloc}" == url and parts.path == "/graph"
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert q["g0.expr"] == inc.truth.promql[0][1]
        assert q["g0.range_input"] == f"{inc.duration_ms // 60_000}m"
        assert q["g0.end_input"] == dt.datetime.fromtimestamp(
            end_ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        assert requests.get(link, timeout=30).status_code == 200  # the UI serves it

        shifted = shift(inc, end_ms * 1_000_000)
        names = sorted({s.name for s in shifted.series})
        got: dict[tuple, dict[int, float]] = {}
        for name in names:
            got.update(stored(url, name, end_ms, inc.duration_ms // 1000))
        want = {s.labels: dict(zip(s.t_ms.tolist(), s.values.tolist())) for s in shifted.series}
        assert got.keys() == want.keys()
        for key, samples in want.items():
            assert got[key] == samples, key

        truth = inc.truth
        p99 = query_range(url, truth.promql[0][1], start_ms / 1000, end_ms / 1000, 15)
        points = {int(round(float(t) * 1000)): float(v) for t, v in p99[0]["values"]
                  if v != "NaN"}
        onset = start_ms + truth.onset_ms
        recovered = start_ms + next(p.end_ms for p in truth.phases if p.name == "recovery")
        before = [v for t, v in points.items() if start_ms + 120_000 <= t < onset]
        after = [v for t, v in points.items() if t >= recovered + 180_000]
        peak = [v for t, v in points.items()
                if start_ms + truth.peak_ms <= t < start_ms + truth.recovery_ms]
        base = max(before)
        assert min(peak) > 10 * base and max(after) < 2 * base
        rise = min(t for t, v in points.items() if t >= start_ms + 120_000 and v > 3 * base)
        assert onset <= rise <= onset + 4 * 60_000, (rise - onset) / 60_000

        ex = requests.get(f"{url}/api/v1/query_exemplars", params={
            "query": "http_server_request_duration_seconds_bucket",
            "start": start_ms / 1000, "end": end_ms / 1000}, timeout=30).json()["data"]
        ids = {e["labels"]["trace_id"] for group in ex for e in group["exemplars"]}
        spans = {bytes(t).hex() for tb in inc.span_tables for t in tb.trace_id}
        assert ids and ids <= spans
        assert len(ids) == inc.exemplar_count


def test_replayer_console_script_loads_a_recording(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    end_ms = fixed_end_ms()
    with running_prometheus(tmp_path) as url:
        proc = subprocess.run(
            [sys.executable, "-m", "replayer.cli", "load", str(root / "recordings" /
                                                                "baseline.jsonl.gz"),
             "--end", iso(end_ms), "--json", "--signals", "metrics"],
            env={"PROMETHEUS_URL": url, "PATH": "/usr/bin:/bin"}, capture_output=True,
            text=True, timeout=300, cwd=root)
        assert proc.returncode == 0, proc.stderr
        count = query(url, 'count(http_server_request_duration_seconds_count)', end_ms / 1000)
        assert int(count[0]["value"][1]) == len(list(cached_incident("baseline").iter_series(
            "http_server_request_duration_seconds_count")))


def test_no_receiver_stops_with_the_fix(tmp_path: Path) -> None:
    with running_prometheus(tmp_path, receiver=False) as url:
        r = load(url, "baseline")
        assert r.exit_code == 3
        assert "--web.enable-remote-write-receiver" in r.output


def test_window_beyond_the_head_is_refused_then_clipped(tmp_path: Path) -> None:
    end_ms = fixed_end_ms()
    with running_prometheus(tmp_path, ooo_window=None) as url:
        r = load(url, "baseline", "--duration", "2h", "--end", iso(end_ms))
        assert r.exit_code == 3, r.output
        assert "out_of_order_time_window: 130m" in r.output and "--clip" in r.output
        assert query(url, "count(up)", end_ms / 1000) == []  # nothing was sent
        r = load(url, "baseline", "--duration", "2h", "--end", iso(end_ms), "--clip")
        assert r.exit_code == 0, r.output
        assert "rejected 0" in r.output and "clipped 0" not in r.output
        oldest = query(url, 'min_over_time(timestamp(up{job="payment-service"})[3h:15s])',
                       end_ms / 1000)
        assert float(oldest[0]["value"][1]) * 1000 >= end_ms - 3_600_000


def test_rejected_samples_exit_non_zero_and_the_rest_is_stored(tmp_path: Path) -> None:
    from generator.model import Series
    from replayer.remote_write.encode import HEADERS, SeriesEncoder, compress, plan_pieces

    end_ms = fixed_end_ms()
    inc = shift(cached_incident("baseline"), end_ms * 1_000_000)
    victim = next(s for s in inc.series if s.name == "process_open_fds")
    cut = end_ms - 600_000
    with running_prometheus(tmp_path, ooo_window=None) as url:
        # another writer already stored a newer sample of one series (not the probe series)
        newer = Series(victim.labels, np.array([cut], np.int64), np.array([-1.0]))
        body = compress(SeriesEncoder([newer]).write_request(plan_pieces([newer], 10)))
        assert requests.post(f"{url}/api/v1/write", data=body, headers=HEADERS,
                             timeout=10).status_code == 204
        r = CliRunner().invoke(cli, ["load", "baseline", "--end", iso(end_ms), "--json",
                                     "--prometheus-url", url, "--signals", "metrics"])
        assert r.exit_code == 1, r.output
        report = json.loads(r.output[: r.output.rindex("}") + 1])["signals"][0]
        older = int((victim.t_ms <= cut).sum())  # older, and the one at the same timestamp
        rejected = sum(report["rejected"].values())
        assert older <= rejected <= older + 2  # the split stops at pieces of ~2 samples
        assert set(report["rejected"]) <= {"HTTP 400: out of order sample",
                                           "HTTP 400: duplicate sample for timestamp"}
        assert report["accepted"] + rejected == inc.sample_count
        for name in sorted({s.name for s in inc.series}):
            got = stored(url, name, end_ms, inc.duration_ms // 1000)
            for s in inc.series:
                if s.name == name and s.labels != victim.labels:
                    assert got[s.labels] == dict(zip(s.t_ms.tolist(), s.values.tolist()))
        kept = stored(url, "process_open_fds", end_ms, inc.duration_ms // 1000)[victim.labels]
        assert kept[cut] == -1.0  # the other writer's sample was not overwritten
        assert all(kept[t] == v for t, v in zip(victim.t_ms.tolist(), victim.values.tolist())
                   if t > cut + 2 * STEP_MS)


def test_second_load_right_after_the_first_changes_nothing(tmp_path: Path) -> None:
    inc = cached_incident("slow_query")
    first_now = time.time_ns()
    with running_prometheus(tmp_path) as url:
        req = LoadRequest(source="slow_query", signals=("metrics",),
                          targets=Targets(prometheus=TargetConfig(url)),
                          push=PushOptions(concurrency=2))
        first = run_load(req, now_ns=lambda: first_now)
        assert not first.lost
        name = "http_server_request_duration_seconds_count"
        before = stored(url, name, first.end_ns // 1_000_000, inc.duration_ms // 1000)
        second = run_load(req, now_ns=lambda: first_now + 3 * STEP_MS * 1_000_000)
        assert not second.lost
        assert second.end_ns == first.end_ns
        assert any("laid onto it" in n for n in second.notes)
        after = stored(url, name, first.end_ns // 1_000_000 + 3 * STEP_MS,
                       inc.duration_ms // 1000 + 60)
        assert after == before
        assert all(not math.isnan(v) for s in after.values() for v in s.values())


class FakeClock:
    """Real time at the start (Prometheus takes recent samples), then moved by sleep()."""

    def __init__(self) -> None:
        self.now = time.time_ns()
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        # round, not truncate: seconds came from nanoseconds, and a truncated nanosecond
        # made the next sleep 15.000000001 s (a flake, in CI once)
        self.now += round(seconds * 1e9)


def baseline_10m():  # type: ignore[no-untyped-def]
    from generator import generate

    return generate("baseline", duration_ms=600_000)


def test_follow_backfills_then_pushes_each_step_until_the_end(tmp_path: Path) -> None:
    clock = FakeClock()
    with running_prometheus(tmp_path) as url:
        req = LoadRequest(source="baseline", duration_ms=600_000, signals=("metrics",),
                          targets=Targets(prometheus=TargetConfig(url)),
                          follow=True, live_from_ms=300_000)
        result = run_load(req, now_ns=clock, sleep=clock.sleep)
        report = result.reports[0]
        assert not report.lost
        full = shift(baseline_10m(), result.end_ns)
        assert report.accepted == sum(len(s) for s in full.series)
        assert len(clock.slept) == 20 and all(0 < s <= 15 for s in clock.slept)
        end_ms = result.end_ns // 1_000_000
        got = stored(url, "process_cpu_seconds_total", end_ms, 600)
        want = next(s for s in full.series if s.name == "process_cpu_seconds_total")
        assert got[want.labels] == dict(zip(want.t_ms.tolist(), want.values.tolist()))
        # "now" (floored to the step) sat 5 minutes into the 10-minute window ...
        started_ms = (clock.now - sum(round(x * 1e9) for x in clock.slept)) // 10**6
        assert result.end_ns // 10**6 == started_ms - started_ms % 15_000 + 300_000
        # ... and the last step was pushed only once it came due
        assert clock.now >= result.end_ns


def test_follow_with_verify_reads_the_whole_window_back(tmp_path: Path) -> None:
    """--verify with --follow (refused before): once the window's last step is out, the
    whole window is read back as one load."""
    clock = FakeClock()
    with running_prometheus(tmp_path) as url:
        req = LoadRequest(source="baseline", duration_ms=600_000, signals=("metrics",),
                          targets=Targets(prometheus=TargetConfig(url)),
                          follow=True, live_from_ms=300_000, verify=True)
        result = run_load(req, now_ns=clock, sleep=clock.sleep)
        report = result.reports[0]
        total = sum(len(s) for s in shift(baseline_10m(), result.end_ns).series)
        assert report.accepted == total and not report.lost
        assert f"verify: the server holds all {total} samples" in report.notes


def test_follow_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    clock = FakeClock()
    calls = {"n": 0}

    def interrupting_sleep(seconds: float) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        clock.sleep(seconds)

    with running_prometheus(tmp_path) as url:
        req = LoadRequest(source="baseline", duration_ms=600_000, signals=("metrics",),
                          targets=Targets(prometheus=TargetConfig(url)),
                          follow=True, live_from_ms=300_000)
        result = run_load(req, now_ns=clock, sleep=interrupting_sleep)
        report = result.reports[0]
        assert not report.lost and report.accepted == report.sent
        assert any("Ctrl-C" in n for n in result.notes)
        full = shift(baseline_10m(), result.end_ns)
        assert report.accepted < sum(len(s) for s in full.series)


@pytest.mark.parametrize("scenario", BUILT_IN)
def test_every_ground_truth_query_returns_the_incident(tmp_path: Path, scenario: str) -> None:
    """Each scenario's PromQL, as the ground truth gives it, run against a real Prometheus
    holding that scenario alone: every query answers during the incident, and the first
    (the one that names the fault) reads differently before the onset and after it."""
    end_ms = fixed_end_ms()
    inc = cached_incident(scenario)
    start_ms = end_ms - inc.duration_ms
    truth = inc.truth
    onset = start_ms + (truth.onset_ms if truth.onset_ms is not None else inc.duration_ms // 3)
    recovery = start_ms + (truth.recovery_ms or 2 * inc.duration_ms // 3)
    with running_prometheus(tmp_path) as url:
        r = load(url, scenario, "--end", iso(end_ms))
        assert r.exit_code == 0, r.output
        for i, (what, q) in enumerate(truth.promql):
            result = query_range(url, q, start_ms / 1000, end_ms / 1000, 15)
            moved, answered = False, False
            for series in result:
                points = [(int(round(float(t) * 1000)), float(v)) for t, v in series["values"]
                          if v not in ("NaN", "+Inf", "-Inf")]
                hot = [v for t, v in points if onset + 60_000 <= t < recovery]
                calm = [v for t, v in points if start_ms + 300_000 <= t < onset]
                answered |= bool(hot)
                # a series that only the incident has, or one that reads differently
                moved |= bool(hot) and (not calm or abs(np.mean(hot) - np.mean(calm)) > 0.3 * max(
                    abs(np.mean(calm)), 1e-9))
            assert answered, (scenario, what, q)
            if i == 0 and truth.onset_ms is not None:
                assert moved, (scenario, what, q)


def test_a_labelled_copy_is_no_conflict_for_a_plain_load(tmp_path: Path) -> None:
    """Issue 18, defect 1: a copy loaded with an extra label (run=a) holds series of its
    own; a plain load of another scenario over the same window must not read them as its
    own earlier samples ("already holds different samples")."""
    now = time.time_ns()
    with running_prometheus(tmp_path) as url:
        targets = Targets(prometheus=TargetConfig(url))
        labelled = run_load(LoadRequest(source="slow_query", signals=("metrics",),
                                        targets=targets, extra_labels=(("run", "a"),)),
                            now_ns=lambda: now)
        assert not labelled.lost
        plain = run_load(LoadRequest(source="pool_exhaustion", signals=("metrics",),
                                     targets=targets), now_ns=lambda: now)
        assert not plain.lost and plain.end_ns == labelled.end_ns
        # both are stored, side by side: the copy under its label, the plain load without
        got = requests.get(f"{url}/api/v1/query", params={
            "query": "count by (run) (up)", "time": plain.end_ns / 1e9}).json()
        runs = {r["metric"].get("run", ""): r["value"][1] for r in got["data"]["result"]}
        assert runs == {"a": "3", "": "3"}


def test_a_conflict_names_its_time_and_a_fix_that_works(tmp_path: Path) -> None:
    """Issue 18, defect 5: the conflict gave its time in raw milliseconds, blamed 'another
    seed or scenario' and suggested an --end past the earlier window (in the future when
    that one ended now). It now gives RFC 3339 times and an --end that loads."""
    from replayer.cli_common import iso

    now = time.time_ns() // 1_000_000
    end = now - now % 60_000 - 30 * 60_000
    with running_prometheus(tmp_path) as url:
        def load(*args: str):  # type: ignore[no-untyped-def]
            return CliRunner().invoke(cli, ["load", "baseline", "--duration", "10m",
                                            "--signals", "metrics", "--prometheus-url", url,
                                            *args])

        assert load("--end", iso(end * 1_000_000)).exit_code == 0
        clash = load("--seed", "2", "--end", iso((end + 5 * 60_000) * 1_000_000))
        assert clash.exit_code == 3
        assert f"an earlier replay ending at {iso(end * 1_000_000)}" in clash.output
        assert " ms," not in clash.output and "another seed or scenario" not in clash.output
        fix = iso((end - 10 * 60_000 - 15_000) * 1_000_000)  # a step before it began
        assert f"--end {fix} or earlier" in clash.output
        assert load("--seed", "2", "--end", fix).exit_code == 0


def test_a_long_window_goes_span_by_span_and_every_sample_is_stored(tmp_path: Path) -> None:
    """50 hours of metrics, generated and pushed in 9 spans (memory follows the span):
    the server holds every sample (--verify reads them back), and a counter stored across
    the span boundaries never goes down. Small requests, one at a time: sent series by
    series over each span, Prometheus 2.42 lost thousands of these samples while compacting
    its head, every run; sent as slices of time, none."""
    from generator.chunks import generate_spans

    end_ms = fixed_end_ms()
    window_ms = 50 * 3_600_000
    expected = sum(s.sample_count for s in generate_spans("slow_query", 1, window_ms, 60_000))
    with running_prometheus(tmp_path, ooo_window="52h") as url:
        r = load(url, "slow_query", "--duration", "50h", "--step", "60s", "--end",
                 iso(end_ms), "--verify", "--batch-samples", "2000", "--concurrency", "1")
        assert r.exit_code == 0, r.output
        assert f"accepted {expected}" in r.output and "rejected 0" in r.output
        assert f"verify: the server holds all {expected} samples" in r.output
        assert "generated in 9 spans of 6 h" in r.output
        got = stored(url, "http_requests_total", end_ms, window_ms // 1000)
        assert got
        for series in got.values():
            times = sorted(series)
            values = [series[t] for t in times]
            assert len(times) == window_ms // 60_000 + 1
            assert all(b >= a for a, b in zip(values, values[1:]))
