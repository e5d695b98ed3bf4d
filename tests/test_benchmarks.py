"""The benchmark runs in reduced size (what CI can afford). It asserts what was pushed,
never how fast: speed is for the full-size run by hand, reported in the README."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from generator import generate
from tests.integration.prometheus_server import prometheus_binary

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_reduced_benchmark_pushes_everything() -> None:
    prometheus_binary()
    out = subprocess.run([sys.executable, "-m", "benchmarks.run", "--small"], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads((ROOT / "benchmarks/results/latest.json").read_text())
    assert results["size"] == "small"
    for codec in ("remote_write", "loki", "otlp"):
        assert results["encode"][codec]["fast_per_s"] > 0
    scale = results["scale"]
    per_copy = generate("slow_query", duration_ms=7_200_000, signals=("metrics",)).sample_count
    assert scale["rejected"] == 0
    assert per_copy < scale["samples"] <= 2 * per_copy  # two copies, different seeds
    load = results["prometheus_load"]  # each run checked what Prometheus stored
    assert set(load["ceilings_per_s"]) == {"1 lanes", "4 lanes"}
    assert load["best_ceiling"] in load["ceilings_per_s"]
    assert load["ratio_end_to_end_over_best_ceiling"] > 0 and load["cpu_s_per_million"] > 0
    assert "Prometheus load end-to-end / best ceiling (" in out.stdout
    dry = results["long_dry_run"]
    assert dry["exit_code"] == 0 and dry["peak_rss_mb"] > 0, dry
    base = dry["baseline"]  # a window generated whole, beside the one that went span by span
    assert base["exit_code"] == 0 and base["peak_rss_mb"] > 0, base
    assert "generated in 9 spans of 6 h" in dry["said"] and "spans" not in base["said"]
