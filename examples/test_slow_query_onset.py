"""Worked example: an investigation tool's test standing on a replayed incident.

It loads slow_query into a real Prometheus through the `replayed_incident` fixture (the
pytest plugin that ships with telemetry-replayer), runs the PromQL query the ground truth
names, and checks that the latency spike starts where the ground truth says the incident
starts. Run it against your Prometheus:

    pytest examples/ --replayer-prometheus-url http://localhost:9090
"""

from __future__ import annotations

import statistics

import pytest
import requests

# How many scrape steps after the ground-truth onset we expect the spike to start.
# tests/test_examples.py sets this to 2 to show that the assertion can fail.
EXPECTED_ONSET_SHIFT_STEPS = 0


@pytest.mark.replayer("slow_query", seed=1, signals=("metrics",))
def test_p99_spike_starts_at_the_ground_truth_onset(replayed_incident) -> None:
    report = replayed_incident
    what, query = report.truth.promql[0]  # scoped to this test's own series
    assert what == "p99 of POST /payment"
    step = report.step.total_seconds()
    answer = requests.get(f"{report.prometheus_url}/api/v1/query_range", params={
        "query": query, "start": report.window_start.timestamp(),
        "end": report.window_end.timestamp(), "step": step}, timeout=30).json()
    (series,) = answer["data"]["result"]
    points = [(float(t), float(v)) for t, v in series["values"] if v != "NaN"]
    onset = report.truth.onset.timestamp()
    baseline = statistics.median(v for t, v in points if t < onset - 120)
    spike_start = next(t for t, v in points if t >= onset - 300 and v > 5 * baseline)
    expected = onset + EXPECTED_ONSET_SHIFT_STEPS * step
    assert abs(spike_start - expected) <= step, (
        f"the p99 spike starts {spike_start - onset:+.0f} s from the ground-truth onset")
