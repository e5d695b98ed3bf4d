"""The incident model every layer speaks.

Times are relative to the incident window start and carry their unit in the name
(``t_ms`` for metrics, ``t_ns``/``start_ns`` for logs and spans). Bulk data is columnar
(numpy arrays marked read-only); everything else is a frozen dataclass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Labels = tuple[tuple[str, str], ...]
"""Sorted ``(name, value)`` pairs; metric labels include ``__name__``."""

AttrValue = str | int | float | bool
Attributes = tuple[tuple[str, AttrValue], ...]

# OTLP enums, kept as plain ints so the generator needs no protobuf import.
SPAN_KIND_INTERNAL = 1
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2

METRIC_TYPES = ("counter", "gauge", "histogram", "summary", "info", "stateset", "unknown")


def frozen_array(values: Any, dtype: type | str) -> np.ndarray:
    """A read-only copy of ``values`` as ``dtype`` (one-dimensional unless given 2-D)."""
    arr = np.array(values, dtype=dtype, copy=True)
    arr.setflags(write=False)
    return arr


def make_labels(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


@dataclass(frozen=True)
class Exemplars:
    """Exemplars of one series: parallel arrays, in time order."""

    t_ms: np.ndarray  # int64
    value: np.ndarray  # float64
    trace_id: np.ndarray  # uint8 (n, 16)
    span_id: np.ndarray  # uint8 (n, 8)

    def __len__(self) -> int:
        return int(self.t_ms.shape[0])

    @staticmethod
    def empty() -> Exemplars:
        return Exemplars(
            frozen_array([], np.int64),
            frozen_array([], np.float64),
            frozen_array(np.zeros((0, 16)), np.uint8),
            frozen_array(np.zeros((0, 8)), np.uint8),
        )


@dataclass(frozen=True)
class Series:
    """One metric series: sorted labels including ``__name__``, samples in time order."""

    labels: Labels
    t_ms: np.ndarray  # int64, strictly increasing
    values: np.ndarray  # float64
    exemplars: Exemplars = field(default_factory=Exemplars.empty)

    @property
    def name(self) -> str:
        return dict(self.labels)["__name__"]

    def label(self, key: str, default: str = "") -> str:
        return dict(self.labels).get(key, default)

    def __len__(self) -> int:
        return int(self.t_ms.shape[0])


@dataclass(frozen=True)
class MetricFamily:
    """Metadata of a metric family, as remote-write ``MetricMetadata`` carries it."""

    name: str
    type: str
    help: str
    unit: str = ""


@dataclass(frozen=True)
class LogStream:
    """One Loki stream.

    ``time_prefix`` names how the producing program printed the entry's own time at the
    start of the line (``"python"``: ``2025-03-04 10:12:01,234 ``; ``"postgres"``:
    ``2025-03-04 10:12:01.234 UTC ``); the time shift renders it, so lines stay relative
    in recordings. ``None``: the line is sent as it is.
    """

    labels: Labels
    t_ns: np.ndarray  # int64, non-decreasing
    lines: tuple[str, ...]
    metadata: tuple[tuple[tuple[str, str], ...], ...]  # per entry, sorted pairs
    time_prefix: str | None = None

    def __len__(self) -> int:
        return int(self.t_ns.shape[0])


@dataclass(frozen=True)
class SpanEvent:
    name: str
    t_ns: int
    attributes: Attributes = ()


@dataclass(frozen=True)
class SpanTable:
    """Spans that share one resource and one instrumentation scope, columnar."""

    resource: Attributes
    scope_name: str
    scope_version: str
    trace_id: np.ndarray  # uint8 (n, 16)
    span_id: np.ndarray  # uint8 (n, 8)
    parent_span_id: np.ndarray  # uint8 (n, 8); all zero for a root span
    start_ns: np.ndarray  # int64
    end_ns: np.ndarray  # int64
    kind: np.ndarray  # int8 (OTLP SpanKind)
    status_code: np.ndarray  # int8 (OTLP StatusCode)
    name: tuple[str, ...]
    status_message: tuple[str, ...]
    attributes: tuple[Attributes, ...]
    events: tuple[tuple[SpanEvent, ...], ...]
    scope_schema_url: str = ""
    # OTLP Span.flags per span (uint32: W3C trace flags, and 0x100 when the exporter says
    # whether the parent was remote); None: all 0
    flags: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.start_ns.shape[0])

    def span_flags(self) -> np.ndarray:
        return (np.zeros(len(self), np.uint32) if self.flags is None
                else self.flags.astype(np.uint32))


@dataclass(frozen=True)
class Phase:
    name: str  # baseline | onset | peak | recovery
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class FaultTruth:
    """One fault of an incident with several: where, what, when, and what reveals it."""

    kind: str  # the fault kind (the generator's)
    component: str
    root_cause_kind: str
    identity: tuple[tuple[str, str], ...]
    primary: bool
    phases: tuple[Phase, ...]
    summary: str
    promql: tuple[tuple[str, str], ...]
    logql: tuple[tuple[str, str], ...]
    traceql: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RedHerringTruth:
    """Something that happened, shows in the data, and caused nothing."""

    kind: str
    start_ms: int
    end_ms: int
    what: str  # how it shows


@dataclass(frozen=True)
class GroundTruth:
    """What happened, for tests and agent evaluations to grade against."""

    summary: str
    root_cause_component: str
    root_cause_kind: str
    onset_ms: int | None
    peak_ms: int | None
    recovery_ms: int | None
    phases: tuple[Phase, ...]
    affected_signals: tuple[str, ...]
    example_trace_ids: tuple[str, ...]  # 32 lower-case hex
    promql: tuple[tuple[str, str], ...]  # (what it shows, query)
    logql: tuple[tuple[str, str], ...]
    traceql: tuple[tuple[str, str], ...]
    # how the root cause is named in the data (Prometheus labels, span/resource attributes,
    # Loki labels), sorted (key, value) pairs: match a guess to it without an alias
    root_cause_identity: tuple[tuple[str, str], ...] = ()
    # which requests have a trace: (("policy", "all"),) or the tail-sampling policy's terms
    trace_sampling: tuple[tuple[str, str], ...] = (("policy", "all"),)
    # an incident of several faults lists each (the primary one first); one of a single
    # fault leaves this empty, its fields above say it all
    faults: tuple[FaultTruth, ...] = ()
    red_herrings: tuple[RedHerringTruth, ...] = ()


@dataclass(frozen=True)
class Incident:
    """A whole incident: every signal of one window, relative to its start."""

    scenario: str
    seed: int
    duration_ms: int
    step_ms: int
    families: tuple[MetricFamily, ...]
    series: tuple[Series, ...]
    log_streams: tuple[LogStream, ...]
    span_tables: tuple[SpanTable, ...]
    truth: GroundTruth
    knobs: tuple[tuple[str, float | int | str], ...] = ()
    generator_version: str = ""
    source: tuple[tuple[str, str], ...] = ()  # where the data came from (generated/recorded)

    def iter_series(self, name: str) -> Iterator[Series]:
        return (s for s in self.series if s.name == name)

    @property
    def sample_count(self) -> int:
        return sum(len(s) for s in self.series)

    @property
    def log_line_count(self) -> int:
        return sum(len(s) for s in self.log_streams)

    @property
    def span_count(self) -> int:
        return sum(len(t) for t in self.span_tables)

    @property
    def exemplar_count(self) -> int:
        return sum(len(s.exemplars) for s in self.series)
