"""Turn what was read (Prometheus series, Loki streams, OTLP spans and logs) into an
:class:`Incident` with times relative to the window start."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np

from generator.metrics import TIME_VALUED
from generator.model import (
    AttrValue,
    GroundTruth,
    Incident,
    LogStream,
    MetricFamily,
    Phase,
    Series,
    SpanEvent,
    SpanTable,
    frozen_array,
)

NS_PER_MS = 1_000_000


def any_value(v) -> AttrValue:  # type: ignore[no-untyped-def]
    """An OTLP ``AnyValue`` as the model's scalar (arrays and maps become JSON text)."""
    kind = v.WhichOneof("value")
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(v, kind)  # type: ignore[no-any-return]
    if kind == "bytes_value":
        return bytes(v.bytes_value).hex()
    if kind == "array_value":
        return json.dumps([any_value(x) for x in v.array_value.values])
    if kind == "kvlist_value":
        return json.dumps({kv.key: any_value(kv.value) for kv in v.kvlist_value.values})
    return ""


def _attrs(kvs) -> tuple[tuple[str, AttrValue], ...]:  # type: ignore[no-untyped-def]
    return tuple((kv.key, any_value(kv.value)) for kv in kvs)


def _id_columns(spans: list) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    """(n, width) byte matrices; an absent parent is 8 zero bytes."""
    out = {}
    for name, width in (("trace_id", 16), ("span_id", 8), ("parent_span_id", 8)):
        raw = b"".join(bytes(getattr(s, name)).rjust(width, b"\0")[:width] for s in spans)
        out[name] = np.frombuffer(raw, np.uint8).reshape(len(spans), width).copy()
    return out


def span_tables(resource_spans: Iterable, start_ns: int) -> tuple[SpanTable, ...]:  # type: ignore[type-arg]
    groups: dict[tuple, list] = {}
    for rs in resource_spans:
        resource = tuple(sorted(_attrs(rs.resource.attributes)))
        for ss in rs.scope_spans:
            key = (resource, ss.scope.name, ss.scope.version, ss.schema_url)
            groups.setdefault(key, []).extend(ss.spans)
    tables = []
    for (resource, scope, version, schema), spans in sorted(groups.items(),
                                                            key=lambda kv: kv[0][1:]):
        spans = sorted(spans, key=lambda s: (s.trace_id, s.start_time_unix_nano, s.span_id))
        ids = _id_columns(spans)
        tables.append(SpanTable(
            resource=resource, scope_name=scope, scope_version=version,
            trace_id=frozen_array(ids["trace_id"], np.uint8),
            span_id=frozen_array(ids["span_id"], np.uint8),
            parent_span_id=frozen_array(ids["parent_span_id"], np.uint8),
            start_ns=frozen_array([s.start_time_unix_nano - start_ns for s in spans], np.int64),
            end_ns=frozen_array([s.end_time_unix_nano - start_ns for s in spans], np.int64),
            kind=frozen_array([s.kind for s in spans], np.int8),
            status_code=frozen_array([s.status.code for s in spans], np.int8),
            name=tuple(s.name for s in spans),
            status_message=tuple(s.status.message for s in spans),
            attributes=tuple(_attrs(s.attributes) for s in spans),
            events=tuple(tuple(SpanEvent(e.name, e.time_unix_nano - start_ns, _attrs(e.attributes))
                               for e in s.events) for s in spans),
            scope_schema_url=schema, flags=frozen_array([s.flags for s in spans], np.uint32)))
    return tuple(tables)


def relative_time_values(series: Sequence[Series], start_ms: int) -> list[Series]:
    """Values that are times (process start, _created) are stored relative to the window
    start, as the generator stores them; ms precision keeps the round trip exact."""
    out = []
    for s in series:
        if s.name in TIME_VALUED:
            rel = np.round(s.values - start_ms / 1000.0, 3)
            s = Series(s.labels, s.t_ms, frozen_array(rel, np.float64), s.exemplars)
        out.append(s)
    return out


def estimate_step_ms(series: Sequence[Series], default: int = 15_000) -> int:
    diffs = [int(np.median(np.diff(s.t_ms))) for s in series if len(s) > 2]
    return int(np.median(diffs)) if diffs else default


def example_traces(tables: Sequence[SpanTable], count: int = 5) -> tuple[str, ...]:
    """The slowest root spans' traces."""
    roots = [(int(t.end_ns[i] - t.start_ns[i]), bytes(t.trace_id[i]).hex())
             for t in tables for i in range(len(t)) if not t.parent_span_id[i].any()]
    roots.sort(key=lambda r: (-r[0], r[1]))
    seen: list[str] = []
    for _, tid in roots:
        if tid not in seen:
            seen.append(tid)
        if len(seen) == count:
            break
    return tuple(seen)


def recorded_incident(name: str, start_ms: int, end_ms: int, series: Sequence[Series],
                      families: Sequence[MetricFamily], streams: Sequence[LogStream],
                      tables: Sequence[SpanTable], source: dict[str, str],
                      queries: dict[str, str]) -> Incident:
    duration = end_ms - start_ms
    truth = GroundTruth(
        summary=f"recorded from {source.get('kind', 'a live run')}: no scenario, so no "
                "root cause is known; the queries are the ones it was recorded with",
        root_cause_component="unknown", root_cause_kind="unknown", onset_ms=None,
        peak_ms=None, recovery_ms=None, phases=(Phase("recorded", 0, duration),),
        affected_signals=(), example_trace_ids=example_traces(tables),
        promql=tuple(("recorded series", q) for q in queries.get("promql", "").split("\n")
                     if q),
        logql=(("recorded logs", queries["logql"]),) if queries.get("logql") else (),
        traceql=(("recorded traces", queries["traceql"]),) if queries.get("traceql") else (),
        trace_sampling=(("policy", "unknown"),),  # whatever the recorded stack kept
    )
    return Incident(
        scenario=name, seed=0, duration_ms=duration,
        step_ms=estimate_step_ms(series), families=tuple(families),
        series=tuple(sorted(relative_time_values(series, start_ms), key=lambda s: s.labels)),
        log_streams=tuple(streams), span_tables=tuple(tables), truth=truth,
        source=tuple(sorted(source.items())))
