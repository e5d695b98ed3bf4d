"""Cut a (time-shifted) incident into time slices: what is due between two instants.

Used by ``load --follow``: metrics samples, log entries and spans (a span is due when it
ends, as an exporter would send it) with ``lo <= t < hi``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from generator.model import Exemplars, LogStream, Series, SpanTable

NS_PER_MS = 1_000_000


def slice_series(series: Sequence[Series], lo_ms: int, hi_ms: int) -> tuple[Series, ...]:
    out = []
    for s in series:
        a, b = np.searchsorted(s.t_ms, [lo_ms, hi_ms], "left")
        ea, eb = np.searchsorted(s.exemplars.t_ms, [lo_ms, hi_ms], "left")
        if b > a:
            e = s.exemplars
            ex = Exemplars(e.t_ms[ea:eb], e.value[ea:eb], e.trace_id[ea:eb], e.span_id[ea:eb])
            out.append(Series(s.labels, s.t_ms[a:b], s.values[a:b], ex))
    return tuple(out)


def slice_logs(streams: Sequence[LogStream], lo_ns: int, hi_ns: int) -> tuple[LogStream, ...]:
    out = []
    for s in streams:
        a, b = (int(x) for x in np.searchsorted(s.t_ns, [lo_ns, hi_ns], "left"))
        if b > a:
            out.append(LogStream(s.labels, s.t_ns[a:b], s.lines[a:b], s.metadata[a:b],
                                 s.time_prefix))
    return tuple(out)


def take_spans(t: SpanTable, idx: np.ndarray | slice) -> SpanTable:
    """The spans of ``t`` at ``idx`` (indices, or a slice of rows), every column."""
    if isinstance(idx, slice):
        def pick(col: tuple) -> tuple:  # type: ignore[type-arg]
            return col[idx]
    else:
        rows = idx.tolist()

        def pick(col: tuple) -> tuple:  # type: ignore[type-arg]
            return tuple(col[i] for i in rows)
    return replace(
        t, trace_id=t.trace_id[idx], span_id=t.span_id[idx],
        parent_span_id=t.parent_span_id[idx], start_ns=t.start_ns[idx], end_ns=t.end_ns[idx],
        kind=t.kind[idx], status_code=t.status_code[idx], name=pick(t.name),
        status_message=pick(t.status_message), attributes=pick(t.attributes),
        events=pick(t.events), flags=None if t.flags is None else t.flags[idx])


def slice_spans(tables: Sequence[SpanTable], lo_ns: int, hi_ns: int) -> tuple[SpanTable, ...]:
    out = []
    for t in tables:
        idx = np.flatnonzero((t.end_ns >= lo_ns) & (t.end_ns < hi_ns))
        if idx.size:
            out.append(take_spans(t, idx))
    return tuple(out)
