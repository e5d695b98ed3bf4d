"""Long windows, a span at a time: metrics whose memory follows the span, not the window.

A window longer than :data:`SPANNED_FROM_MS` (metrics only) is simulated in spans of
:data:`SPAN_MS`, each one laid out, handed over and dropped before the next. Nothing in the
data shows where one span ends:

* the incident is the window's own: its phases, red herrings, the other clients of the
  database and the reporting job's schedule are drawn once for the whole window (from the
  same streams :func:`generator.generate` draws them from), so the spans only look them up;
* the requests still in flight where a span ends (running, queued for a thread or a
  connection, keeping a leaked connection) go on into the next one with the schedule they
  already have; both queues serve first come, first served, so the next span's arrivals
  queue behind them exactly as they would have in one long run;
* what else the service carries over is handed on: every restart so far and the POSTs
  counted towards the next OOM kill (memory_leak), how many connections the pool has open,
  the connections open when too_many_clients began and when each grows too old;
* each span counts what happens between its first and last scrape: the step of a request
  that happened before is counted by the span it happened in, its end by the one it ends in;
* every counter goes on from the value it had at the earlier span's last scrape, which is
  the next span's first; levels (rows in a table, the dirty buffers, a wandering noise)
  go on from theirs.

Same scenario, seed and window: the same spans, byte for byte (a span's random streams are
spawned from the seed and its index). Spanned and whole generation of one window are two
draws of the same model, not the same bytes: a window is generated one way or the other,
by its length.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np

from .background import background, with_runs
from .card import upstream_calls
from .metrics import build_metric_span
from .model import Incident, MetricFamily
from .scenarios import Scenario, ScenarioError, get_scenario
from .series import Carry
from .simulate import (
    WARMUP_S,
    Active,
    Span,
    TraceIds,
    Traffic,
    _other_clients,
    assign_ids,
    herring_restarts,
    simulate,
)
from .truth import build_truth

SPAN_MS = 6 * 3_600_000
# Requests in flight handed from one span to the next, at most. The model's queue for the
# worker threads has no bound (no client gives up, and the process is not killed for the
# memory the queue takes): where an incident stops the service for days (connection_leak,
# lock_contention over a window of weeks: its phases are fractions of the window) the
# queue grows by the arrival rate, and a span would hold all of it.
MAX_IN_FLIGHT = 200_000
SPANNED_FROM_MS = 2 * 86_400_000  # metrics-only windows longer than this go span by span
_SPAN_STREAM = 0x5350414E  # "SPAN": a span's streams are spawned from (seed, scenario, this, k)


def spanned(duration_ms: int, signals: tuple[str, ...]) -> bool:
    """Whether a window is generated span by span: metrics only, and long."""
    return tuple(signals) == ("metrics",) and duration_ms > SPANNED_FROM_MS


@dataclass(frozen=True)
class Spans:
    """A long window's metrics, to be read span by span (:meth:`__iter__` generates them;
    each span is an :class:`Incident` of the whole window holding that span's samples)."""

    scenario: Scenario
    seed: int
    duration_ms: int
    step_ms: int
    knobs: dict[str, float]
    span_ms: int = SPAN_MS

    @property
    def count(self) -> int:
        return -(-self.duration_ms // self.span_ms)

    def bounds(self) -> list[tuple[int, int]]:
        """(first scrape, last scrape) of each span, in ms of window time; a span's last
        is the next one's first (its samples go out with the earlier span)."""
        edges = list(range(0, self.duration_ms, self.span_ms)) + [self.duration_ms]
        return list(zip(edges[:-1], edges[1:]))

    def __iter__(self) -> Iterator[Incident]:
        return _spans(self)


def generate_spans(scenario: str | Scenario, seed: int = 1, duration_ms: int | None = None,
                   step_ms: int | None = None, knobs: Mapping[str, object] | None = None,
                   span_ms: int | None = None) -> Spans:
    """The metrics of ``scenario`` over a long window, span by span (nothing is generated
    until the spans are read). The spans are :data:`SPAN_MS` long, or the whole steps
    that fit in it."""
    from . import _check_window

    spec = scenario if isinstance(scenario, Scenario) else get_scenario(scenario)
    duration_ms = spec.default_duration_s * 1000 if duration_ms is None else int(duration_ms)
    step_ms = spec.default_step_s * 1000 if step_ms is None else int(step_ms)
    _check_window(duration_ms, step_ms)
    if span_ms is None:
        span_ms = max(SPAN_MS - SPAN_MS % step_ms, 10 * step_ms)
    if span_ms % step_ms or span_ms < 10 * step_ms:
        raise ScenarioError(f"a span ({span_ms} ms) must be a whole number of steps "
                            f"({step_ms} ms), at least 10")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ScenarioError(f"seed must be a non-negative integer, got {seed!r}")
    return Spans(spec, int(seed), duration_ms, step_ms, spec.resolve_knobs(knobs),
                 int(span_ms))


def _spans(sp: Spans) -> Iterator[Incident]:
    from . import GENERATOR_VERSION, draw_incident

    spec, knobs = sp.scenario, sp.knobs
    # drawn once for the window, as generate() draws them
    rngs, plan, faults, herrings = draw_incident(spec, sp.seed)
    duration_s = sp.duration_ms / 1000.0
    others = _other_clients(Active(faults, duration_s), rngs["faults"], knobs)
    bg = background(duration_s, rngs["gauges"])
    manual = [at * duration_s for h, at in herrings if h.kind == "report_run"]
    if manual:
        bg = with_runs(bg, manual)
    n_cp = bg.checkpoint_start_s.shape[0]
    checkpoints = (np.asarray(rngs["gauges"].poisson(40.0, n_cp), np.float64),
                   0.9 * np.exp(0.3 * rngs["gauges"].standard_normal(n_cp)),
                   35.0 * np.exp(0.6 * rngs["gauges"].standard_normal(n_cp)))
    truth = build_truth(spec, plan, sp.duration_ms, _no_traffic(), _no_ids(),
                        float(knobs["trace_sample_ratio"]), faults, herrings)
    extra = herring_restarts(herrings, sp.duration_ms, knobs)
    carry = Carry(extras={"background": bg, "checkpoints": checkpoints})
    state = Span(0.0, 0.0, WARMUP_S, others=others)
    families: dict[str, MetricFamily] = {}
    for k, (lo_ms, hi_ms) in enumerate(sp.bounds()):
        streams = draw_incident(spec, sp.seed, _SPAN_STREAM, k)[0]
        span = replace(state, lo_s=lo_ms / 1000.0, hi_s=hi_ms / 1000.0)
        sim = simulate(knobs, faults, sp.duration_ms, sp.step_ms, streams, extra, span)
        assert sim.resume is not None
        state = sim.resume
        held = 0 if state.prefix is None else int(state.prefix.route.shape[0])
        ids = assign_ids(sim.traffic, streams["ids"])
        up = upstream_calls(sim.traffic, streams["upstream"])
        fams, series, nxt = build_metric_span(sim, ids, knobs, plan, streams["gauges"],
                                              herrings, (up, streams["upstream"]), carry)
        assert nxt is not None
        carry = nxt
        del sim, ids, up
        for f in fams:
            families.setdefault(f.name, f)
        yield Incident(
            scenario=spec.name, seed=sp.seed, duration_ms=sp.duration_ms, step_ms=sp.step_ms,
            families=tuple(sorted(families.values(), key=lambda f: f.name)), series=series,
            log_streams=(), span_tables=(), truth=truth,
            knobs=tuple(sorted(knobs.items())), generator_version=GENERATOR_VERSION,
            source=(("kind", "generated"), ("span", f"{k + 1}/{sp.count}")))
        if held > MAX_IN_FLIGHT and k + 1 < sp.count:
            raise ScenarioError(
                f"{spec.name} over {sp.duration_ms / 86_400_000:g} days keeps {held:,} requests "
                f"in flight at once {hi_ms / 3_600_000:g} h into the window (the model's queue "
                "for worker threads has no bound, and the incident's phases are fractions of "
                "the window: a long window has a long incident); the next span cannot be "
                f"generated in bounded memory (the first {k + 1} of {sp.count} spans were).\n"
                "  fix: a shorter --duration")


def _no_traffic() -> Traffic:
    """No request: the ground truth of a spanned window names no example trace (its
    metrics are all that is built)."""
    empty = {name: np.zeros(0, np.int64) for name in Traffic.__dataclass_fields__}
    empty.update(route=np.zeros(0, np.int8), status=np.zeros(0, np.int16),
                 error=np.zeros(0, np.int8), sampled=np.zeros(0, bool),
                 era=np.zeros(0, np.int8), nplus_offset=np.zeros(1, np.int64),
                 nplus_gap_s=np.zeros(0, np.float32), nplus_s=np.zeros(0, np.float32))
    return Traffic(**empty)


def _no_ids() -> TraceIds:
    return TraceIds(*(np.zeros((0, w), np.uint8) for w in (16, 8, 8, 8, 8, 8, 8, 8)))


__all__ = ["Spans", "generate_spans", "spanned", "SPAN_MS", "SPANNED_FROM_MS", "MAX_IN_FLIGHT"]
