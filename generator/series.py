"""Shared pieces of the metric builders: the series builder, scrape alignment, labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model import Exemplars, Labels, MetricFamily, Series, frozen_array, make_labels
from .simulate import NS_PER_MS

APP_JOB = {"job": "payment-service", "instance": "payment-service:8000"}
PG_JOB = {"job": "postgres", "instance": "postgres-exporter:9187"}
TIME_VALUED = frozenset({"process_start_time_seconds", "http_requests_created"})
PROCESS_START_BEFORE_WINDOW_S = 3 * 3600


def le_label(bound: float) -> str:
    """``le`` as the exporter prints it: ``str()`` of the bound as the instrumentation
    declared it (the OTel HTTP duration buckets are ints: ``1``, ``5``, ``10``; a float
    view prints ``1.0``)."""
    return "+Inf" if bound == float("inf") else str(bound)


@dataclass
class Carry:
    """What one span of a long window hands the next (``generator.chunks``): the value of
    every cumulative series at the span's last scrape, which is the next span's first, and
    named levels (rows in a table, a wandering noise's value). ``extras`` holds what is
    drawn once for the whole window."""

    values: dict[Labels, float] = field(default_factory=dict)
    levels: dict[str, float] = field(default_factory=dict)
    extras: dict[str, object] = field(default_factory=dict)
    first: bool = True  # the window's first span: its first scrape is its own


class SeriesBuilder:
    """Series on one scrape grid. payment-service may restart in the window
    (``restarts``: (stop, up) in ms): its series have no sample while no process answered,
    and its counters start again from zero in each new process.

    With a ``carry`` the grid is one span of a longer window (``window_ms``): its first
    scrape is the earlier span's last, every cumulative series goes on from the value it had
    there, levels go on from theirs, and :meth:`finish` leaves out that first scrape."""

    def __init__(self, scrape_ms: np.ndarray,
                 restarts: tuple[tuple[float, float], ...] = (), carry: Carry | None = None,
                 window_ms: int | None = None) -> None:
        self.t_ms = frozen_array(scrape_ms, np.int64)
        self.series: list[Series] = []
        self.families: dict[str, MetricFamily] = {}
        self.restarts = restarts
        self.carry = carry
        self.next = Carry(extras=carry.extras, first=False) if carry is not None else None
        self.window_ms = int(self.t_ms[-1]) if window_ms is None else int(window_ms)
        t = self.t_ms
        self.app_down = np.zeros(t.shape, bool)
        # each scrape's process: 0 for the first, +1 per restart (by when it answered)
        self.app_era = np.zeros(t.shape, np.int64)
        # when the process answering each scrape started (s, relative to the window)
        self.app_start_s = np.full(t.shape, -PROCESS_START_BEFORE_WINDOW_S + 0.42)
        for stop, up in restarts:
            self.app_down |= (t >= stop) & (t < up)
            self.app_era += t >= up
            # the interpreter starts, imports and opens its pool before uvicorn answers
            self.app_start_s = np.where(t >= up, up / 1000.0 - 1.63, self.app_start_s)

    def app_index(self, t_ns: np.ndarray) -> np.ndarray:
        """:meth:`index` for payment-service's own counters: what a process counted after
        its last scrape before it stopped was never scraped (index ``n``: left out)."""
        idx = self.index(t_ns)
        for stop, _ in self.restarts:
            last = int(np.searchsorted(self.t_ms, stop, side="left")) - 1
            if last < 0:
                continue
            lost = (t_ns > self.t_ms[last] * NS_PER_MS) & (t_ns <= stop * NS_PER_MS)
            idx = np.where(lost, self.n, idx)
        return idx

    def drop(self, job: dict[str, str], down: np.ndarray) -> None:
        """No sample of ``job``'s series (``up`` aside) at the scrapes ``down``."""
        out = []
        for s in self.series:
            if s.label("job") == job["job"] and s.name != "up":
                keep = ~down[np.searchsorted(self.t_ms, s.t_ms)]
                s = Series(s.labels, frozen_array(s.t_ms[keep], np.int64),
                           frozen_array(s.values[keep], np.float64), s.exemplars)
            out.append(s)
        self.series = out

    def cumulative(self, name: str) -> bool:
        """Whether series ``name`` only counts up (a counter, a histogram's parts)."""
        kinds = {n: f.type for n, f in self.families.items()}
        base = name
        for suffix in ("_bucket", "_sum", "_count", "_total"):
            if base.endswith(suffix) and kinds.get(base[:-len(suffix)]) == "histogram":
                base = base[:-len(suffix)]
        return kinds.get(base) in ("counter", "histogram")

    def finish(self, job: dict[str, str]) -> None:
        """Restarts of ``job``'s process: counters and histograms count from zero in each
        process, and no series has a sample while none answered (nor where a value is NaN:
        a series of one process only). In a span, every cumulative series first goes on
        from where the earlier span left it."""
        if not self.restarts and self.carry is None:
            return
        if self.carry is not None:
            self._stitch()
        keep = ~self.app_down
        first = [int(np.searchsorted(self.t_ms, up, side="left")) for _, up in self.restarts]
        out = []
        for s in self.series:
            counts = self.cumulative(s.name)
            if s.label("job") != job["job"] or s.name == "up":
                if counts and self.next is not None:
                    self.next.values[s.labels] = float(s.values[-1])
                out.append(s)
                continue
            values = np.array(s.values, np.float64)
            if counts:
                for k in first:  # the new process's count starts where the old was scraped
                    if 0 < k < self.n:
                        values[k:] = values[k:] - values[k - 1]
                if self.next is not None:
                    self.next.values[s.labels] = float(values[-1])
            mask = keep & ~np.isnan(values)
            ex = s.exemplars
            out.append(Series(s.labels, frozen_array(self.t_ms[mask], np.int64),
                              frozen_array(values[mask], np.float64), ex))
        self.series = out

    def _stitch(self) -> None:
        """Each cumulative series of a later span: the earlier span's last value plus what
        this span counted since its first scrape; one the earlier spans had and this one did
        not count into stays at its value (as the whole window would have it)."""
        assert self.carry is not None
        out, seen = [], set()
        for s in self.series:
            if not self.cumulative(s.name):
                out.append(s)
                continue
            seen.add(s.labels)
            prev = self.carry.values.get(s.labels)
            if prev is not None and not self.carry.first:
                s = Series(s.labels, s.t_ms, frozen_array(prev + (s.values - s.values[0]),
                                                          np.float64), s.exemplars)
            out.append(s)
        for labels, prev in self.carry.values.items():
            if labels not in seen:
                out.append(Series(labels, self.t_ms, frozen_array(self.const(prev), np.float64),
                                  Exemplars.empty()))
        self.series = out

    def emit(self) -> list[Series]:
        """The series as the window has them: a later span without its first scrape (the
        earlier span's last); a series left with no sample is left out."""
        if self.carry is None or self.carry.first:
            return self.series
        out = []
        for s in self.series:
            keep = s.t_ms > self.t_ms[0]
            if keep.all():
                out.append(s)
            elif keep.any():
                ex = s.exemplars
                out.append(Series(s.labels, frozen_array(s.t_ms[keep], np.int64),
                                  frozen_array(s.values[keep], np.float64), ex))
        return out

    def start(self, key: str, default: float) -> float:
        """Level ``key`` at the first scrape: where the earlier span left it, else ``default``."""
        if self.carry is None:
            return default
        return self.carry.levels.get(key, default)

    def end(self, key: str, value: float) -> None:
        """Level ``key`` at the last scrape, for the next span."""
        if self.next is not None:
            self.next.levels[key] = float(value)

    def ar(self, key: str, rng: np.random.Generator, sigma: float,
           keep: float = 0.9) -> np.ndarray:
        """:func:`ar_noise` on the grid, going on from the earlier span's last value."""
        start = None if self.carry is None or self.carry.first else self.carry.levels.get(key)
        out = ar_noise(rng, self.n, sigma, keep, start)
        self.end(key, out[-1])
        return out

    @property
    def n(self) -> int:
        return int(self.t_ms.shape[0])

    def family(self, name: str, mtype: str, help_text: str, unit: str = "") -> None:
        self.families.setdefault(name, MetricFamily(name, mtype, help_text, unit))

    def add(self, name: str, labels: dict[str, str], values: np.ndarray,
            exemplars: Exemplars | None = None) -> None:
        full: Labels = make_labels({**labels, "__name__": name})
        vals = frozen_array(np.asarray(values, dtype=np.float64), np.float64)
        if vals.shape != self.t_ms.shape:
            raise ValueError(f"{name}: {vals.shape[0]} values for {self.t_ms.shape[0]} times")
        self.series.append(Series(full, self.t_ms, vals, exemplars or Exemplars.empty()))

    def const(self, value: float) -> np.ndarray:
        return np.full(self.t_ms.shape, float(value))

    def index(self, t_ns: np.ndarray) -> np.ndarray:
        """The first scrape at or after each instant: when a counter includes an event."""
        return np.searchsorted(self.t_ms * NS_PER_MS, t_ns, side="left")

    def counter(self, idx: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Cumulative count (or sum of ``weights``) of events by scrape index."""
        n = self.n
        return np.cumsum(np.bincount(idx, weights=weights, minlength=n)[:n]).astype(np.float64)


def ar_noise(rng: np.random.Generator, n: int, sigma: float, keep: float = 0.9,
             start: float | None = None) -> np.ndarray:
    """A slowly wandering AR(1) series with stationary standard deviation ``sigma``; with
    ``start``, its first value is that (the series goes on from an earlier stretch)."""
    shocks = rng.standard_normal(n) * sigma * np.sqrt(1.0 - keep * keep)
    out = np.empty(n)
    level = rng.standard_normal() * sigma
    for i in range(n):  # a scrape grid, not requests: at most a few thousand points a day
        level = keep * level + shocks[i]
        if i == 0 and start is not None:
            level = start
        out[i] = level
    return out
