"""The public API is pinned: names in __all__ and what they do."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

import replayer
from replayer import Targets, generate, load, read_recording, scope_logql, scope_promql
from replayer import write_recording as write


def test_public_names_are_pinned() -> None:
    assert replayer.__all__ == ["AbsoluteTruth", "Incident", "LoadReport", "SignalReport",
                                "Targets", "generate", "load", "read_recording", "record",
                                "scope_logql", "scope_promql", "write_recording"]
    for name in replayer.__all__:
        assert getattr(replayer, name) is not None


def test_generate_takes_human_durations(tmp_path: Path) -> None:
    a = generate("slow_query", seed=2, duration="20m", step="15s")
    b = generate("slow_query", seed=2, duration=dt.timedelta(minutes=20), step=15_000)
    assert a.duration_ms == b.duration_ms == 1_200_000
    write(a, tmp_path / "a.jsonl")
    assert read_recording(tmp_path / "a.jsonl").sample_count == a.sample_count


def test_scoping_adds_the_run_matcher_to_every_selector() -> None:
    q = ('histogram_quantile(0.99, sum by (le) (rate(x_bucket{job="a", b="c"}[1m]))) / '
         'sum(rate(y_count{}[1m]))')
    scoped = scope_promql(q, {"replayer_run": "r1"})
    assert scoped == ('histogram_quantile(0.99, sum by (le) (rate(x_bucket{replayer_run="r1", '
                      'job="a", b="c"}[1m]))) / sum(rate(y_count{replayer_run="r1"}[1m]))')
    assert scope_logql('{service_name="s"} |= "x"', {"replayer_run": "r1"}) == \
        '{replayer_run="r1", service_name="s"} |= "x"'
    assert scope_promql(q, {}) == q


@pytest.mark.integration
def test_load_reports_absolute_truth_against_real_prometheus(tmp_path: Path) -> None:
    from tests.integration.prometheus_server import query, running_prometheus

    with running_prometheus(tmp_path) as url:
        end = dt.datetime.fromtimestamp((time.time() // 60) * 60, tz=dt.timezone.utc)
        report = load("slow_query", Targets(prometheus=url), end=end, signals=("metrics",),
                      labels={"replayer_run": "api-test"})
        report.raise_for_loss()
        assert report.window_end == end
        assert report.window_start == end - dt.timedelta(minutes=30)
        onset = report.truth.onset
        assert onset is not None and report.window_start < onset < report.window_end
        onset_ms = report.incident.truth.onset_ms
        assert onset_ms is not None
        assert (onset - report.window_start).total_seconds() == pytest.approx(onset_ms / 1000)
        _, q = report.truth.promql[0]
        assert 'replayer_run="api-test"' in q
        assert query(url, q, end.timestamp())
        assert report.signals["metrics"].accepted == report.incident.sample_count
    with pytest.raises(replayer.api.UsageError, match="timezone-aware"):
        load("slow_query", Targets(prometheus=url), end=dt.datetime(2026, 1, 1),
             signals=("metrics",))


def test_loss_raises_with_the_summary() -> None:
    report = load("baseline", Targets(prometheus="http://127.0.0.1:9"), signals=("metrics",))
    assert report.lost and report.failures["metrics"][0] == 4
    with pytest.raises(replayer.api.DataLossError, match="cannot reach Prometheus"):
        report.raise_for_loss()
