"""pytest plugin: a replayed incident as a fixture, with its ground truth to grade against.

    @pytest.mark.replayer("slow_query", seed=1, signals=("metrics",))   # end="now" default
    def test_my_investigator(replayed_incident):
        report = replayed_incident              # a replayer.LoadReport
        query = report.truth.promql[0][1]       # scoped to this test's data
        ...

Targets come from ``--replayer-prometheus-url`` / ``--replayer-loki-url`` /
``--replayer-tempo-url``, else the ini options of the same names (``replayer_prometheus_url``
...), else ``PROMETHEUS_URL`` / ``LOKI_URL`` / ``TEMPO_URL``, else localhost defaults.
Signals: the marker's ``signals``, else ``--replayer-signals`` / ``replayer_signals``, else
all three.

Isolation: every test's load carries the label ``replayer_run=<id of the test>`` on every
series and log stream, ``report.truth.promql`` / ``logql`` are rewritten to select it, and
its trace IDs are its own (salted with the same id, consistently in spans, exemplars and
logs; ``report.truth.example_trace_ids`` are the salted ones), so tests sharing a
Prometheus, Loki or Tempo never see each other's data.

An unreachable target fails the test with the reason, unless ``--replayer-skip-unreachable``
(or ini ``replayer_skip_unreachable = true``) turns that into a skip. A load that lost data
fails the test with the summary.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from .api import LoadReport, Targets, load
from .errors import ReplayerError

_TARGETS = (("prometheus-url", "PROMETHEUS_URL", "http://localhost:9090"),
            ("loki-url", "LOKI_URL", "http://localhost:3100"),
            ("tempo-url", "TEMPO_URL", "http://localhost:4317"))
RUN_LABEL = "replayer_run"


def for_plugin(reason: str) -> str:
    """A reason written for the CLI, with this plugin's options in place of the CLI's
    (``--prometheus-url`` -> ``--replayer-prometheus-url``, ``--signals`` ->
    ``--replayer-signals``)."""
    import re

    return re.sub(r"(?<![\w-])--(prometheus-url|loki-url|tempo-url|signals)\b",
                  r"--replayer-\1", reason)

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("replayer", "telemetry-replayer: replayed incidents")
    for name, env, default in _TARGETS:
        group.addoption(f"--replayer-{name}", default=None,
                        help=f"target for replayed_incident (else ini, ${env}, {default})")
        parser.addini(f"replayer_{name.replace('-', '_')}", f"default for --replayer-{name}")
    group.addoption("--replayer-signals", default=None,
                    help="comma-separated signals to load (default metrics,logs,traces)")
    parser.addini("replayer_signals", "default for --replayer-signals")
    group.addoption("--replayer-skip-unreachable", action="store_true", default=False,
                    help="skip tests whose targets cannot be reached (default: fail)")
    parser.addini("replayer_skip_unreachable", "skip instead of fail when unreachable",
                  type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "replayer(scenario, seed=1, signals=None, knobs=None, duration=None, "
        "end='now'): the incident the replayed_incident fixture loads")


def _setting(config: pytest.Config, name: str, env: str | None, default: str) -> str:
    value = config.getoption(f"--replayer-{name}")
    if value:
        return str(value)
    ini = config.getini(f"replayer_{name.replace('-', '_')}")
    if ini:
        return str(ini)
    return os.environ.get(env, default) if env else default


def run_id(nodeid: str) -> str:
    return hashlib.sha256(nodeid.encode()).hexdigest()[:12]


def _spec(request: pytest.FixtureRequest) -> dict[str, Any]:
    spec: dict[str, Any] = {"scenario": "slow_query", "seed": 1}
    marker = request.node.get_closest_marker("replayer")
    if marker is not None:
        if marker.args:
            spec["scenario"] = marker.args[0]
        spec.update(marker.kwargs)
    param = getattr(request, "param", None)
    if isinstance(param, str):
        spec["scenario"] = param
    elif isinstance(param, dict):
        spec.update(param)
    return spec


@pytest.fixture
def replayed_incident(request: pytest.FixtureRequest) -> Iterator[LoadReport]:
    """Load the marked scenario (default slow_query) ending now; yield the LoadReport."""
    config = request.config
    spec = _spec(request)
    prom, loki, tempo = (_setting(config, n, e, d) for n, e, d in _TARGETS)
    signals = spec.get("signals") or tuple(
        s.strip() for s in _setting(config, "signals", None, "metrics,logs,traces").split(",")
        if s.strip())
    skip = config.getoption("--replayer-skip-unreachable") or config.getini(
        "replayer_skip_unreachable")
    source = spec["scenario"]
    if spec.get("knobs") or spec.get("duration") or spec.get("step"):
        from .api import generate

        source = generate(spec["scenario"], seed=spec["seed"], duration=spec.get("duration"),
                          step=spec.get("step"), knobs=spec.get("knobs"))
    try:
        report = load(source, Targets(prometheus=prom, loki=loki, tempo=tempo),
                      end=spec.get("end", "now"), signals=signals, seed=spec["seed"],
                      labels={RUN_LABEL: run_id(request.node.nodeid)},
                      trace_id_salt=run_id(request.node.nodeid))
    except ReplayerError as exc:
        pytest.fail(f"replayed_incident: {exc}", pytrace=False)
    # the reasons are written for the CLI: name this plugin's options instead
    unreachable = {n: for_plugin(why) for n, (code, why) in report.failures.items()
                   if code == 4}
    if unreachable:
        reason = "; ".join(f"{n}: {why}" for n, why in unreachable.items())
        if skip:
            pytest.skip(f"replayed_incident: unreachable target ({reason})")
        pytest.fail(f"replayed_incident: unreachable target ({reason}); start it, point "
                    "--replayer-<signal>-url at it, choose signals with --replayer-signals, "
                    "or pass --replayer-skip-unreachable to skip instead", pytrace=False)
    if report.lost:
        lines = [line for r in report.signals.values() for line in r.lines()]
        pytest.fail("replayed_incident: the load lost data:\n" + "\n".join(lines),
                    pytrace=False)
    yield report
