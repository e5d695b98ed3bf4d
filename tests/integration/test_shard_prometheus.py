"""Two `--shard` processes push the same series and samples as one unsharded load
(verified by querying Prometheus)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cached_incident

from .prometheus_server import running_prometheus
from .test_prometheus_load import iso, stored

pytestmark = pytest.mark.integration


def _stored_all(url: str, end_ms: int) -> dict:
    inc = cached_incident("slow_query")
    out = {}
    for name in sorted({s.name for s in inc.series}):
        out.update(stored(url, name, end_ms, inc.duration_ms // 1000))
    return out


def test_two_shards_equal_one_unsharded_load(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    end_ms = now - now % 60_000
    root = Path(__file__).resolve().parents[2]

    def load(url: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "replayer.cli", "load", "slow_query", "--signals", "metrics",
             "--end", iso(end_ms), "--prometheus-url", url, *extra], cwd=root,
            env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    with running_prometheus(tmp_path / "one") as one, \
            running_prometheus(tmp_path / "two") as two:
        single = load(one)
        shards = [load(two, "--shard", f"{k}/2") for k in range(2)]
        for p in [single, *shards]:
            out, _ = p.communicate(timeout=300)
            assert p.returncode == 0, out
        whole, split = _stored_all(one, end_ms), _stored_all(two, end_ms)
    assert split == whole
    assert sum(len(v) for v in split.values()) == cached_incident("slow_query").sample_count


def test_instances_load_copies_that_never_share_a_series(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from generator import generate
    from replayer.cli import cli

    now = time.time_ns() // 1_000_000
    end_ms = now - now % 60_000
    with running_prometheus(tmp_path) as url:
        r = CliRunner().invoke(cli, ["load", "baseline", "--duration", "10m", "--instances",
                                     "3", "--signals", "metrics", "--end", iso(end_ms),
                                     "--prometheus-url", url])
        assert r.exit_code == 0, r.output
        got = {k: v for k, v in stored(url, "process_cpu_seconds_total", end_ms, 600).items()
               if dict(k)["job"] == "payment-service"}  # card-processor's are copied too
    instances = sorted(dict(k)["instance"] for k in got)
    assert instances == ["payment-service-0:8000", "payment-service-1:8000",
                         "payment-service-2:8000"]
    one = generate("baseline", seed=1, duration_ms=600_000)
    per_copy = sum(len(s) for s in one.series)
    assert f"accepted {3 * per_copy}" in r.output
    values = [tuple(v.values()) for v in got.values()]
    assert len(set(values)) == 3  # each copy has its own seed
