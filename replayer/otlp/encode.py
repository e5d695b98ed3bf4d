"""OTLP traces encoder: ``ExportTraceServiceRequest`` bytes, written directly.

No SDK and no message object per span: attribute bytes are cached (they repeat across
spans), spans are written field by field in canonical order, so the result equals what
``opentelemetry-proto``'s classes serialise (tests decode and compare with them).
Spans are grouped by resource and scope, as OTLP wants.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from generator.model import Attributes, AttrValue, SpanTable

from ..wire import double, field, fixed64, tag, text, uint, varint

HTTP_HEADERS = {"Content-Type": "application/x-protobuf"}


def any_value(value: AttrValue) -> bytes:
    """``AnyValue`` for a string, bool, int or float (the types the model carries)."""
    if isinstance(value, bool):
        return tag(2, 0) + (b"\x01" if value else b"\x00") if value else tag(2, 0) + b"\x00"
    if isinstance(value, int):
        return tag(3, 0) + varint(value)
    if isinstance(value, float):
        return double(4, value) or tag(4, 1) + bytes(8)
    if isinstance(value, str):
        return field(1, value.encode())
    raise TypeError(f"attribute value {value!r} is not str, bool, int or float")


class _AttrCache:
    def __init__(self) -> None:
        self.cache: dict[tuple[str, type, AttrValue], bytes] = {}

    def key_values(self, number: int, attrs: Attributes) -> bytes:
        out = []
        for key, value in attrs:
            k = (key, type(value), value)
            b = self.cache.get(k)
            if b is None:
                b = field(number, text(1, key) + field(2, any_value(value)))
                if len(self.cache) < 100_000:
                    self.cache[k] = b
            out.append(b)
        return b"".join(out)


def _span(t: SpanTable, i: int, attrs: _AttrCache) -> bytes:
    parent = t.parent_span_id[i].tobytes()
    status = text(2, t.status_message[i]) + uint(3, int(t.status_code[i]))
    events = b"".join(
        field(11, fixed64(1, e.t_ns) + text(2, e.name) + attrs.key_values(3, e.attributes))
        for e in t.events[i])
    body = b"".join((
        field(1, t.trace_id[i].tobytes()), field(2, t.span_id[i].tobytes()),
        field(4, parent) if any(parent) else b"", text(5, t.name[i]), uint(6, int(t.kind[i])),
        fixed64(7, int(t.start_ns[i])), fixed64(8, int(t.end_ns[i])),
        attrs.key_values(9, t.attributes[i]), events,
        field(15, status) if status else b"",
    ))
    return field(2, body)  # ScopeSpans.spans


@dataclass(frozen=True)
class SpanBatch:
    """Spans ``lo:hi`` of table ``table``."""

    table: int
    lo: int
    hi: int

    @property
    def spans(self) -> int:
        return self.hi - self.lo


class TraceEncoder:
    def __init__(self, tables: Sequence[SpanTable]) -> None:
        self.tables = tables
        self.attrs = _AttrCache()

    def resource_spans(self, batch: SpanBatch) -> bytes:
        t = self.tables[batch.table]
        scope = field(1, text(1, t.scope_name) + text(2, t.scope_version))
        spans = b"".join(_span(t, i, self.attrs) for i in range(batch.lo, batch.hi))
        resource = field(1, self.attrs.key_values(1, t.resource))
        return field(1, resource + field(2, scope + spans))  # request.resource_spans

    def request(self, batches: Sequence[SpanBatch]) -> bytes:
        """``ExportTraceServiceRequest`` holding ``batches``."""
        return b"".join(self.resource_spans(b) for b in batches)


def plan_batches(tables: Sequence[SpanTable], max_spans: int) -> Iterator[list[SpanBatch]]:
    """Requests of at most ``max_spans`` spans; a trace's spans of one table stay together
    when the table is cut, since tables are sorted by request."""
    current: list[SpanBatch] = []
    room = max_spans
    for ti, t in enumerate(tables):
        lo = 0
        while lo < len(t):
            hi = min(lo + room, len(t))
            current.append(SpanBatch(ti, lo, hi))
            room -= hi - lo
            lo = hi
            if room == 0:
                yield current
                current, room = [], max_spans
    if current:
        yield current
