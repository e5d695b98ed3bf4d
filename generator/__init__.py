"""Deterministic incident generator: scenario spec + seed -> :class:`Incident`.

Pure: numpy only, no I/O, no clock, no global randomness. Every draw comes from a
``numpy.random.Generator`` spawned from ``SeedSequence(seed)`` per signal, so changing how
logs are written cannot shift the metrics.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

from .card import upstream_calls
from .chunks import generate_spans
from .logs import build_logs, make_clients
from .metrics import build_metrics
from .model import Incident, MetricFamily, Series
from .scenarios import SCENARIOS, PhasePlan, Scenario, ScenarioError, get_scenario
from .simulate import assign_ids, herring_restarts, simulate
from .texts import failures
from .traces import build_spans
from .truth import build_truth

GENERATOR_VERSION = "6"
MAX_STEPS = 2_000_000
# Appending a stream keeps the others' draws as they were (SeedSequence.spawn is by index).
STREAMS = ("traffic", "latency", "pool", "ids", "clients", "logs", "gauges", "faults",
           "phases", "upstream")

__all__ = ["generate", "generate_spans", "Incident", "Scenario", "ScenarioError", "SCENARIOS",
           "get_scenario", "GENERATOR_VERSION"]


def generate(scenario: str | Scenario, seed: int = 1, duration_ms: int | None = None,
             step_ms: int | None = None, knobs: Mapping[str, object] | None = None,
             signals: tuple[str, ...] = ("metrics", "logs", "traces")) -> Incident:
    """Build the incident ``scenario`` for ``seed``; same arguments, same incident.

    ``signals`` leaves out what is not needed (a metrics-only load of a day-long window
    need not format a million log lines); what is built is the same either way."""
    spec = scenario if isinstance(scenario, Scenario) else get_scenario(scenario)
    duration_ms = spec.default_duration_s * 1000 if duration_ms is None else int(duration_ms)
    step_ms = spec.default_step_s * 1000 if step_ms is None else int(step_ms)
    _check_window(duration_ms, step_ms)
    resolved = spec.resolve_knobs(knobs)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ScenarioError(f"seed must be a non-negative integer, got {seed!r}")

    rngs, plan, faults, herrings = draw_incident(spec, int(seed))
    sim = simulate(resolved, faults, duration_ms, step_ms, rngs,
                   herring_restarts(herrings, duration_ms, resolved))
    traffic = sim.traffic
    ids = assign_ids(traffic, rngs["ids"])
    # who sent each request only shows in logs and spans (its own stream: skipping it
    # moves nothing else)
    clients = (make_clients(traffic, rngs["clients"])
               if "logs" in signals or "traces" in signals else None)
    fails = failures(resolved)
    # the card processor's side of each charge (its own stream, drawn first whatever is built)
    up = upstream_calls(traffic, rngs["upstream"])
    families: tuple[MetricFamily, ...] = ()
    series: tuple[Series, ...] = ()
    if "metrics" in signals:
        families, series = build_metrics(sim, ids, resolved, plan, rngs["gauges"], herrings,
                                         (up, rngs["upstream"]))
    return Incident(
        scenario=spec.name, seed=int(seed), duration_ms=duration_ms, step_ms=step_ms,
        families=families, series=series,
        log_streams=build_logs(traffic, ids, clients, resolved, fails, rngs["logs"],
                               (duration_ms, step_ms), sim.restarts, sim.others)
        if clients is not None and "logs" in signals else (),
        span_tables=build_spans(traffic, ids, clients, fails, sim.restarts, up)
        if clients is not None and "traces" in signals else (),
        truth=build_truth(spec, plan, duration_ms, traffic, ids,
                          float(resolved["trace_sample_ratio"]), faults, herrings),
        knobs=tuple(sorted(resolved.items())), generator_version=GENERATOR_VERSION,
        source=(("kind", "generated"),),
    )


def draw_incident(spec: Scenario, seed: int, *span: int) -> tuple[
        dict[str, np.random.Generator], PhasePlan | None, tuple, tuple]:
    """The seed's random streams, and what it draws for the window from the phases stream:
    (streams, the primary fault's phases, every fault with its phases, the red herrings
    with their times). ``span`` (a span of a long window: its tag and index) gives that
    span's own streams instead."""
    entropy = [seed, zlib.crc32(spec.name.encode()), *span]
    rngs = dict(zip(STREAMS, (np.random.default_rng(s)
                              for s in np.random.SeedSequence(entropy).spawn(len(STREAMS)))))
    plan = spec.phases.realize(rngs["phases"]) if spec.phases is not None else None
    faults = (((spec.fault, plan),) if plan is not None and spec.fault != "none" else ()) + \
        tuple((f.kind, f.phases.realize(rngs["phases"])) for f in spec.also)
    herrings = tuple((h, h.realize(rngs["phases"])) for h in spec.red_herrings)
    return rngs, plan, faults, herrings


def _check_window(duration_ms: int, step_ms: int) -> None:
    if step_ms < 1000 or step_ms % 1000:
        raise ScenarioError(f"step must be a whole number of seconds >= 1s, got {step_ms} ms")
    if duration_ms < 10 * step_ms:
        raise ScenarioError(f"duration must hold at least 10 steps; got {duration_ms} ms "
                            f"with a {step_ms} ms step")
    if duration_ms % step_ms:
        raise ScenarioError(f"duration ({duration_ms} ms) must be a multiple of the step "
                            f"({step_ms} ms)")
    if duration_ms // step_ms > MAX_STEPS:
        raise ScenarioError(f"{duration_ms // step_ms} steps is more than {MAX_STEPS}; use a "
                            "larger step")


# What one generated incident holds in memory, measured on slow_query (peak RSS of a dry
# run, Python 3.11, numpy 2): about 1.4-3.2 kB per simulated request (more for longer
# windows) and 0.05-0.35 MB per step, on ~100 MB of interpreter and libraries. The
# estimate takes the high ends, so it errs on the side of refusing.
_BASE_BYTES = 150 * 2**20
_PER_REQUEST_BYTES = 3_000
_PER_STEP_BYTES = 100_000


def estimate_memory(scenario: str | Scenario, duration_ms: int | None = None,
                    step_ms: int | None = None,
                    knobs: Mapping[str, object] | None = None,
                    signals: tuple[str, ...] | None = None) -> tuple[int, int, int]:
    """(bytes, simulated requests, steps) that generating ``scenario`` over the window
    needs at its peak: the whole window is simulated at once, request by request, so a
    long window or a high rate grows without bound, unless it goes span by span (a long
    window of ``signals`` metrics only: then a span's). Cheap: nothing is simulated."""
    from .chunks import SPAN_MS, spanned

    spec = scenario if isinstance(scenario, Scenario) else get_scenario(scenario)
    duration_ms = spec.default_duration_s * 1000 if duration_ms is None else int(duration_ms)
    step_ms = spec.default_step_s * 1000 if step_ms is None else int(step_ms)
    if signals is not None and spanned(duration_ms, signals):
        duration_ms = SPAN_MS
    resolved = spec.resolve_knobs(knobs)
    rps = sum(float(v) for k, v in resolved.items() if k.startswith("rps_"))
    requests = int(rps * duration_ms / 1000)
    steps = duration_ms // step_ms
    return (_BASE_BYTES + _PER_REQUEST_BYTES * requests + _PER_STEP_BYTES * steps,
            requests, steps)
