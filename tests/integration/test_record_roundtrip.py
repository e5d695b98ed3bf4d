"""generate -> load -> record against the real Prometheus: the recorded series equal the
generated ones (same label sets, same values, same relative times, same exemplars)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from replayer.cli import cli
from replayer.recording import read_recording
from tests.conftest import cached_incident

from .prometheus_server import running_prometheus
from .test_prometheus_load import iso

pytestmark = pytest.mark.integration


def test_round_trip_through_prometheus(tmp_path: Path) -> None:
    inc = cached_incident("slow_query")
    now = time.time_ns() // 1_000_000
    end_ms = now - now % 60_000
    start_ms = end_ms - inc.duration_ms
    out = tmp_path / "rec.jsonl.gz"
    with running_prometheus(tmp_path) as url:
        r = CliRunner().invoke(cli, ["load", "slow_query", "--end", iso(end_ms), "--signals",
                                     "metrics", "--prometheus-url", url])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(cli, ["record", "--start", iso(start_ms), "--end", iso(end_ms),
                                     "--signals", "metrics", "--prometheus-url", url,
                                     "-o", str(out)])
        assert r.exit_code == 0, r.output
    rec = read_recording(out)
    assert rec.duration_ms == inc.duration_ms and rec.step_ms == inc.step_ms
    got = {s.labels: s for s in rec.series}
    assert got.keys() == {s.labels for s in inc.series}
    for s in inc.series:
        g = got[s.labels]
        np.testing.assert_array_equal(g.t_ms, s.t_ms)
        np.testing.assert_array_equal(g.values, s.values, err_msg=str(s.labels))
        np.testing.assert_array_equal(g.exemplars.t_ms, s.exemplars.t_ms)
        np.testing.assert_array_equal(g.exemplars.trace_id, s.exemplars.trace_id)
        np.testing.assert_array_equal(g.exemplars.value, s.exemplars.value)
    source = dict(rec.source)
    assert source["prometheus"] == url and source["window_start"] == iso(start_ms)[:-1] + ".000Z"
    # and the recording replays: load it again, into a fresh Prometheus
    with running_prometheus(tmp_path / "again") as url2:
        r = CliRunner().invoke(cli, ["load", str(out), "--signals", "metrics",
                                     "--prometheus-url", url2])
        assert r.exit_code == 0, r.output
        assert f"accepted {inc.sample_count}" in r.output


def test_record_needs_a_window() -> None:
    r = CliRunner().invoke(cli, ["record", "-o", "/dev/null"])
    assert r.exit_code == 2 and "--last D" in r.output


def test_unreachable_sources_are_reported_and_exit_non_zero(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    r = CliRunner().invoke(cli, ["record", "--last", "5m", "-o", str(out),
                                 "--prometheus-url", "http://127.0.0.1:9",
                                 "--loki-url", "http://127.0.0.1:9",
                                 "--tempo-url", "http://127.0.0.1:9"])
    assert r.exit_code == 1
    assert r.output.count("problem:") == 3 and "incomplete" in r.output
    assert read_recording(out).sample_count == 0  # what could be read (nothing) was written
