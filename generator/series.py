"""Shared pieces of the metric builders: the series builder, scrape alignment, labels."""

from __future__ import annotations

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


class SeriesBuilder:
    def __init__(self, scrape_ms: np.ndarray) -> None:
        self.t_ms = frozen_array(scrape_ms, np.int64)
        self.series: list[Series] = []
        self.families: dict[str, MetricFamily] = {}

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


def ar_noise(rng: np.random.Generator, n: int, sigma: float, keep: float = 0.9) -> np.ndarray:
    """A slowly wandering AR(1) series with stationary standard deviation ``sigma``."""
    shocks = rng.standard_normal(n) * sigma * np.sqrt(1.0 - keep * keep)
    out = np.empty(n)
    level = rng.standard_normal() * sigma
    for i in range(n):  # a scrape grid, not requests: at most a few thousand points a day
        level = keep * level + shocks[i]
        out[i] = level
    return out
