"""OTLP traces encoder: ``ExportTraceServiceRequest`` bytes, written directly.

No SDK and no message object per span: attribute bytes are cached (they repeat across
spans), spans are written field by field in canonical order, so the result equals what
``opentelemetry-proto``'s classes serialise (tests decode and compare with them).
Spans are grouped by resource and scope, as OTLP wants.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

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


_FIXED = struct.Struct("<Q")
_FLAGS = struct.Struct("<I")


class _Spans:
    """Writes the spans of one table; everything that repeats across spans is cached."""

    def __init__(self, t: SpanTable, attrs: _AttrCache) -> None:
        self.t, self.attrs = t, attrs
        self.trace = t.trace_id.tobytes()
        self.span_ids = t.span_id.tobytes()
        self.parent = t.parent_span_id.tobytes()
        self.has_parent: list[bool] = np.asarray(t.parent_span_id.any(axis=1)).tolist()
        self.start = t.start_ns.tolist()
        self.end = t.end_ns.tolist()
        self.kind = t.kind.tolist()
        self.code = t.status_code.tolist()
        self.flags = t.span_flags().tolist()
        self.text: dict[tuple[int, str], bytes] = {}
        self.status: dict[tuple[str, int], bytes] = {}
        self.attr_sets: dict[tuple, bytes] = {}

    def _text(self, number: int, value: str) -> bytes:
        key = (number, value)
        out = self.text.get(key)
        if out is None:
            out = self.text[key] = text(number, value)
        return out

    def span(self, i: int) -> bytes:
        t = self.t
        parts = [b"\x0a\x10", self.trace[16 * i:16 * i + 16],
                 b"\x12\x08", self.span_ids[8 * i:8 * i + 8]]
        if self.has_parent[i]:
            parts += (b"\x22\x08", self.parent[8 * i:8 * i + 8])
        parts.append(self._text(5, t.name[i]))
        if self.kind[i]:
            parts.append(b"\x30" + varint(self.kind[i]))
        parts += (b"\x39", _FIXED.pack(self.start[i] & _U64), b"\x41",
                  _FIXED.pack(self.end[i] & _U64))
        attrs = t.attributes[i]
        encoded = self.attr_sets.get(attrs)
        if encoded is None:
            encoded = self.attrs.key_values(9, attrs)
            if len(self.attr_sets) < 50_000:
                self.attr_sets[attrs] = encoded
        parts.append(encoded)
        for e in t.events[i]:
            parts.append(field(11, fixed64(1, e.t_ns) + text(2, e.name)
                               + self.attrs.key_values(3, e.attributes)))
        key = (t.status_message[i], self.code[i])
        if key != ("", 0):
            status = self.status.get(key)
            if status is None:
                status = self.status[key] = field(15, text(2, key[0]) + uint(3, key[1]))
            parts.append(status)
        if self.flags[i]:
            parts += (b"\x85\x01", _FLAGS.pack(self.flags[i]))  # Span.flags, fixed32
        body = b"".join(parts)
        return b"\x12" + varint(len(body)) + body  # ScopeSpans.spans


_U64 = (1 << 64) - 1


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
        self._writers: dict[int, _Spans] = {}

    def resource_spans(self, batch: SpanBatch) -> bytes:
        t = self.tables[batch.table]
        writer = self._writers.get(batch.table)
        if writer is None:
            writer = self._writers[batch.table] = _Spans(t, self.attrs)
        scope = field(1, text(1, t.scope_name) + text(2, t.scope_version))
        spans = b"".join([writer.span(i) for i in range(batch.lo, batch.hi)])
        resource = field(1, self.attrs.key_values(1, t.resource))
        schema = text(3, t.scope_schema_url) if t.scope_schema_url else b""
        return field(1, resource + field(2, scope + spans + schema))  # request.resource_spans

    def request(self, batches: Sequence[SpanBatch]) -> bytes:
        """``ExportTraceServiceRequest`` holding ``batches``."""
        return b"".join(self.resource_spans(b) for b in batches)


def plan_batches(tables: Sequence[SpanTable], max_spans: int,
                 first_ns: int | None = None) -> Iterator[list[SpanBatch]]:
    """Requests of at most ``max_spans`` spans, whole traces in time order: each request
    holds, from every table, the spans of the traces that began in one stretch of time.

    A trace is then complete when it arrives (Tempo writes it to a searchable block once
    it has been idle for ``max_trace_idle``, instead of joining parts sent seconds apart).
    ``first_ns``: the traces that began from then on go first, in time order, then the
    ones before it (Tempo takes traces in any order). A single trace of more than
    ``max_spans`` spans goes alone. Tables whose spans are not in order of their trace's
    start (a hand-made recording) are sent table by table."""
    keys = _trace_starts(tables)
    if keys is None:
        yield from _table_by_table(tables, max_spans)
        return
    flat = np.sort(np.concatenate(keys)) if keys else np.empty(0, np.int64)
    if first_ns is None:
        yield from _stretches(keys, flat, max_spans, None, None)
    else:
        yield from _stretches(keys, flat, max_spans, first_ns, None)
        yield from _stretches(keys, flat, max_spans, None, first_ns)


def _stretches(keys: list[np.ndarray], flat: np.ndarray, max_spans: int,
               from_key: int | None, stop_key: int | None) -> Iterator[list[SpanBatch]]:
    """The requests of the traces that began in [``from_key``, ``stop_key``) (None: no
    bound); ``keys``: each table's trace starts, ``flat``: all of them, sorted."""
    done = 0 if from_key is None else int(np.searchsorted(flat, from_key, side="left"))
    last = flat.shape[0] if stop_key is None else int(np.searchsorted(flat, stop_key,
                                                                       side="left"))
    lo_key = from_key
    while done < last:
        target = done + max_spans
        if target >= last:
            cut, hi_key = last, stop_key
        else:
            hi_key = int(flat[target])
            cut = int(np.searchsorted(flat, hi_key, side="left"))
            if cut == done:  # one trace holds more than max_spans spans: it goes alone
                cut = int(np.searchsorted(flat, hi_key, side="right"))
                hi_key = int(flat[cut]) if cut < last else stop_key
        batch = []
        for ti, k in enumerate(keys):
            lo = 0 if lo_key is None else int(np.searchsorted(k, lo_key, side="left"))
            hi = k.shape[0] if hi_key is None else int(np.searchsorted(k, hi_key, side="left"))
            if hi > lo:
                batch.append(SpanBatch(ti, lo, hi))
        yield batch
        done, lo_key = cut, hi_key


def _trace_starts(tables: Sequence[SpanTable]) -> list[np.ndarray] | None:
    """Per table, the start of each span's trace (its earliest span in any table); None
    when a table's spans are not in that order."""
    if not tables:
        return []
    ids = np.concatenate([np.ascontiguousarray(t.trace_id, np.uint8).reshape(-1, 16)
                          for t in tables]).view(np.uint64).reshape(-1, 2)
    starts = np.concatenate([t.start_ns for t in tables]).astype(np.int64)
    order = np.lexsort((ids[:, 1], ids[:, 0]))
    a, b = ids[order, 0], ids[order, 1]
    new = np.concatenate([[True], (a[1:] != a[:-1]) | (b[1:] != b[:-1])])
    first = np.minimum.reduceat(starts[order], np.flatnonzero(new)) if order.size else starts
    trace = np.empty(order.shape, np.int64)
    trace[order] = np.cumsum(new) - 1
    out, at = [], 0
    for t in tables:
        k = first[trace[at:at + len(t)]]
        at += len(t)
        if k.shape[0] > 1 and not (k[1:] >= k[:-1]).all():
            return None
        out.append(k)
    return out


def _table_by_table(tables: Sequence[SpanTable], max_spans: int) -> Iterator[list[SpanBatch]]:
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
