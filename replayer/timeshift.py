"""The only place relative times become absolute: lay an incident so its window ends at
``end``. Log lines that printed their own time get it rendered here."""

from __future__ import annotations

import datetime as dt
import itertools
import operator
from collections.abc import Collection
from dataclasses import replace

import numpy as np

from generator.logs import TIME_VALUED_METADATA
from generator.metrics import TIME_VALUED
from generator.model import (
    Exemplars,
    Incident,
    LogStream,
    Series,
    SpanEvent,
    SpanTable,
    frozen_array,
    make_labels,
)

from .errors import UsageError

NS_PER_MS = 1_000_000


def iso(t_ns: int) -> str:
    """RFC 3339 in UTC with milliseconds, as every message and summary prints a time."""
    return dt.datetime.fromtimestamp(t_ns / 1e9, tz=dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_end(value: str, now_ns: int, step_ms: int) -> tuple[int, bool]:
    """``now`` (floored to the step, so repeated loads line up) or an RFC 3339 time.

    Returns (end in ns since the epoch, whether it was ``now``).
    """
    if value == "now":
        step_ns = step_ms * NS_PER_MS
        return now_ns - now_ns % step_ns, True
    text = value.replace("Z", "+00:00")
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--end {value!r} is not 'now' or an RFC 3339 time such as "
                         "2026-11-27T12:00:00Z") from None
    if when.tzinfo is None:
        raise UsageError(f"--end {value!r} has no time zone; add Z or an offset like +01:00")
    seconds = when.timestamp()
    if not 0 < seconds < 2**32:  # 1970 .. 2106: what nanosecond timestamps hold
        raise UsageError(f"--end {value!r} is outside 1970-2106, which the backends' "
                         "nanosecond timestamps hold; give a time near now")
    return int(round(seconds * 1e3)) * NS_PER_MS, False


def start_ns_for(incident: Incident, end_ns: int) -> int:
    return end_ns - incident.duration_ms * NS_PER_MS


def shift(incident: Incident, end_ns: int, extra_labels: dict[str, str] | None = None,
          parts: Collection[str] = ("metrics", "logs", "traces")) -> Incident:
    """A copy of ``incident`` in absolute time (ms for metrics, ns for logs and spans).

    ``parts``: the signals to shift; the others are left out of the copy (a sender that
    shifts only what it sends: the logs' time prefixes cost most)."""
    start_ns = start_ns_for(incident, end_ns)
    if start_ns % NS_PER_MS:
        raise UsageError("--end must be a whole millisecond")
    start_ms = start_ns // NS_PER_MS
    extra = extra_labels or {}
    grids: dict[int, np.ndarray] = {}
    series = tuple(_series(s, start_ms, extra, grids) for s in incident.series) \
        if "metrics" in parts else ()
    logs = tuple(_stream(s, start_ns, extra) for s in incident.log_streams) \
        if "logs" in parts else ()
    spans = tuple(_table(t, start_ns) for t in incident.span_tables) \
        if "traces" in parts else ()
    return replace(incident, series=series, log_streams=logs, span_tables=spans,
                   source=incident.source + (("window_end_ns", str(end_ns)),))


def _series(s: Series, start_ms: int, extra: dict[str, str],
            grids: dict[int, np.ndarray]) -> Series:
    """``grids``: series that shared one timestamp array still do (less memory, and the
    remote-write encoder encodes a shared array's timestamps once)."""
    values = s.values
    if s.name in TIME_VALUED:  # a value that is a time: it moves with the window
        values = frozen_array(values + start_ms / 1000.0, np.float64)
    e = s.exemplars
    ex = Exemplars(frozen_array(e.t_ms + start_ms, np.int64), e.value, e.trace_id, e.span_id) \
        if len(e) else e
    labels = make_labels({**dict(s.labels), **extra}) if extra else s.labels
    t = grids.get(id(s.t_ms))
    if t is None:
        t = grids[id(s.t_ms)] = frozen_array(s.t_ms + start_ms, np.int64)
    return Series(labels, t, values, ex)


def render_prefix(kind: str | None, t_ns: int) -> str:
    if kind is None:
        return ""
    when = dt.datetime.fromtimestamp(t_ns // NS_PER_MS / 1000.0, tz=dt.timezone.utc)
    ms = (t_ns // NS_PER_MS) % 1000
    if kind == "python":
        return when.strftime("%Y-%m-%d %H:%M:%S") + f",{ms:03d} "
    if kind == "postgres":
        return when.strftime("%Y-%m-%d %H:%M:%S") + f".{ms:03d} UTC "
    raise UsageError(f"unknown log time_prefix {kind!r} (known: python, postgres)")


def render_prefixes(kind: str | None, t_ns: np.ndarray) -> list[str]:
    """``render_prefix`` for every time at once (numpy renders the dates)."""
    n = int(t_ns.shape[0])
    if kind is None:
        return [""] * n
    if kind not in ("python", "postgres"):
        raise UsageError(f"unknown log time_prefix {kind!r} (known: python, postgres)")
    # 2026-11-27T10:12:01.234 (floored to the millisecond, as render_prefix does)
    when = np.datetime_as_string((np.asarray(t_ns, np.int64) // NS_PER_MS).astype(
        "datetime64[ms]"), unit="ms")
    when = np.strings.replace(when, "T", " ")
    if kind == "python":
        return np.strings.add(np.strings.replace(when, ".", ","), " ").tolist()
    return np.strings.add(when, " UTC ").tolist()


def _stream(s: LogStream, start_ns: int, extra: dict[str, str]) -> LogStream:
    t = s.t_ns + start_ns
    lines = s.lines if s.time_prefix is None else tuple(
        map(operator.add, render_prefixes(s.time_prefix, t), s.lines))
    labels = make_labels({**dict(s.labels), **extra}) if extra else s.labels
    return LogStream(labels, frozen_array(t, np.int64), lines,
                     shift_metadata(s.metadata, start_ns), None)


def shift_metadata(metadata: tuple[tuple[tuple[str, str], ...], ...],
                   delta_ns: int) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Move the time-valued structured metadata (OTLP's ``observed_timestamp``) by
    ``delta_ns``; every other pair stays the object it was."""
    out = []
    at: dict[int, int] = {}  # entries of one length mostly share their key order
    for m in metadata:
        i = at.get(len(m), -1)
        if not (0 <= i < len(m) and m[i][0] in TIME_VALUED_METADATA):
            i = next((j for j, (k, _) in enumerate(m) if k in TIME_VALUED_METADATA), -1)
            if i < 0:
                out.append(m)
                continue
            at[len(m)] = i
        key, value = m[i]
        try:
            moved = str(int(value) + delta_ns)
        except ValueError:
            raise UsageError(f"structured metadata {key}={value!r} is not a time in ns; "
                             "fix the recording's log entry") from None
        out.append(m[:i] + ((key, moved),) + m[i + 1:])
    return tuple(out)


def _table(t: SpanTable, start_ns: int) -> SpanTable:
    events = list(t.events)  # most spans have none: only those with events are rebuilt
    for i in itertools.compress(range(len(events)), events):
        events[i] = tuple(SpanEvent(e.name, e.t_ns + start_ns, e.attributes) for e in events[i])
    return replace(t, start_ns=frozen_array(t.start_ns + start_ns, np.int64),
                   end_ns=frozen_array(t.end_ns + start_ns, np.int64), events=tuple(events))
