"""OTLP traces encoder: ``ExportTraceServiceRequest`` bytes, written directly.

No SDK and no message object per span: attribute bytes are cached (they repeat across
spans), spans are written field by field in canonical order, so the result equals what
``opentelemetry-proto``'s classes serialise (tests decode and compare with them).
Spans are grouped by resource and scope, as OTLP wants.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter

import numpy as np

from generator.model import Attributes, AttrValue, SpanTable

from .. import bulk, columns
from ..slicing import take_spans
from ..wire import double, field, fixed64, tag, text, uint, varint

HTTP_HEADERS = {"Content-Type": "application/x-protobuf"}
Pair = tuple[str, AttrValue]
AnyValueBytes = bytes
_SECOND = itemgetter(1)


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
        self.cache: dict[tuple[str, type, AttrValue | str], bytes] = {}

    def key_values(self, number: int, attrs: Attributes) -> bytes:
        out = []
        for key, value in attrs:
            # 0.0 and -0.0 are equal and hash alike, and are not the same bytes
            k = (key, float, value.hex()) if type(value) is float else (key, type(value), value)
            b = self.cache.get(k)
            if b is None:
                b = field(number, text(1, key) + field(2, any_value(value)))
                if len(self.cache) < 100_000:
                    self.cache[k] = b
            out.append(b)
        return b"".join(out)


class _PairTexts(dict[Pair, str]):
    """One attribute's ``KeyValue`` field as latin-1 text, by (key, value): for a column
    whose values are all of one type (so 1 and True, equal in Python, never meet)."""

    def __init__(self, attrs: _AttrCache, number: int) -> None:
        super().__init__()
        self.attrs, self.number = attrs, number

    def __missing__(self, pair: Pair) -> str:
        out = self[pair] = self.attrs.key_values(self.number, (pair,)).decode("latin-1")
        return out


class _KeyPrefixes(dict[int, str]):
    """The bytes of a ``KeyValue`` field before its value's own bytes (a string's UTF-8,
    an int's varint), as latin-1 text, by the size of those bytes: for a string, field
    tag, sizes, key, and the AnyValue's string tag and size; for an int, up to its varint
    tag. ``like`` is a value of the column's type."""

    def __init__(self, number: int, key: str, like: str | int) -> None:
        super().__init__()
        self.number, self.key, self.like = number, key, like

    def __missing__(self, size: int) -> str:
        if isinstance(self.like, str):
            value: AnyValueBytes = field(1, b"x" * size)
        else:
            value = tag(3, 0) + b"\x01" * size
        whole = field(self.number, text(1, self.key) + field(2, value))
        out = self[size] = whole[:len(whole) - size].decode("latin-1")
        return out


class _Spans:
    """Writes the spans of one table a batch at a time: the numeric fields of all of a
    batch's spans in byte matrices, the names, attributes (by columns, see
    ``replayer.columns``), events and statuses as texts, all joined span by span in C.
    Everything that does not depend on the batch is read once."""

    def __init__(self, t: SpanTable, attrs: _AttrCache) -> None:
        n = len(t)
        self.t, self.attrs = t, attrs
        self.trace = np.ascontiguousarray(t.trace_id, np.uint8).reshape(n, 16)
        self.span_id = np.ascontiguousarray(t.span_id, np.uint8).reshape(n, 8)
        self.parent = np.ascontiguousarray(t.parent_span_id, np.uint8).reshape(n, 8)
        self.has_parent: np.ndarray = np.asarray(self.parent.any(axis=1))
        self.kind = np.asarray(t.kind, np.int64)
        self.start = _le(t.start_ns, 8)
        self.end = _le(t.end_ns, 8)
        self.has_start = np.asarray(t.start_ns != 0, np.int64)
        self.has_end = np.asarray(t.end_ns != 0, np.int64)
        flags = t.span_flags().tolist()
        self.flags: list[str] | None = None
        if any(flags):  # Span.flags, fixed32: a few values in a table
            by_value = {f: (b"\x85\x01" + _le(np.array([f]), 4).tobytes()).decode("latin-1")
                        if f else "" for f in set(flags)}
            self.flags = list(map(by_value.__getitem__, flags))
        names: dict[str, str] = {}
        for name in set(t.name):
            names[name] = text(5, name).decode("latin-1")
        self.names = list(map(names.__getitem__, t.name))
        self.name_len = np.fromiter(map(len, self.names), np.int64, n)
        self.columns = columns.by_columns(t.attributes, self._column, self._each)
        self.events: list[str] | None = None
        if any(t.events):
            self.events = [""] * n
            for i in itertools.compress(range(n), t.events):
                self.events[i] = b"".join(
                    field(11, fixed64(1, e.t_ns) + text(2, e.name)
                          + attrs.key_values(3, e.attributes))
                    for e in t.events[i]).decode("latin-1")
        self.status: list[str] | None = None
        code = t.status_code.tolist()
        if any(code) or any(t.status_message):
            texts: dict[tuple[str, int], str] = {}
            for key in set(zip(t.status_message, code)):
                texts[key] = (field(15, text(2, key[0]) + uint(3, key[1])).decode("latin-1")
                              if key != ("", 0) else "")
            self.status = list(map(texts.__getitem__, zip(t.status_message, code)))
        self.tail_len = sum(np.fromiter(map(len, x), np.int64, n)
                            for x in (self.events, self.status, self.flags) if x is not None)

    def _column(self, pairs: list[Pair], same: bool,
                ) -> tuple[list[columns.Part], columns.Sizes, columns.Sizes]:
        """One attribute key's ``KeyValue`` fields (see ``columns.by_columns``)."""
        if same:
            piece = self.attrs.key_values(9, (pairs[0],)).decode("latin-1")
            return [piece], len(piece), 0
        key = pairs[0][0]
        values = list(map(_SECOND, pairs))
        kinds = set(map(type, values))
        if kinds == {str}:  # a value's prefix depends only on its size
            texts = columns.latin1(values)
            lens = np.fromiter(map(len, texts), np.int64, len(texts))
            by_size = _KeyPrefixes(9, key, "")
            if lens.min() == lens.max():
                prefix = by_size[int(lens[0])]
                return [prefix, texts], lens + len(prefix), 0
            prefixes = list(map(by_size.__getitem__, lens.tolist()))
            return ([prefixes, texts],
                    lens + np.fromiter(map(len, prefixes), np.int64, len(lens)), 0)
        if kinds == {int} and -(1 << 63) <= min(values) and max(values) < 1 << 63:
            varints = bulk.varint_piece(np.array(values, np.int64))
            digits = _row_texts([varints])
            by_len = _KeyPrefixes(9, key, 0)
            int_prefixes = list(map(by_len.__getitem__, varints[1].tolist()))
            return ([int_prefixes, digits], varints[1] + np.fromiter(
                map(len, int_prefixes), np.int64, len(int_prefixes)), 0)
        if len(kinds) == 1 and kinds <= {bool}:
            texts = list(map(_PairTexts(self.attrs, 9).__getitem__, pairs))
        else:  # floats (0.0 and -0.0 are equal, not the same bytes), mixed types
            texts = [self.attrs.key_values(9, (p,)).decode("latin-1") for p in pairs]
        return [texts], np.fromiter(map(len, texts), np.int64, len(texts)), 0

    def _each(self, entries: Sequence[Attributes]) -> tuple[list[str], np.ndarray]:
        texts = [self.attrs.key_values(9, a).decode("latin-1") for a in entries]
        return texts, np.zeros(len(texts), np.int64)

    def spans(self, lo: int, hi: int) -> str:
        """``ScopeSpans.spans`` fields of spans ``lo:hi`` as latin-1 text."""
        n = hi - lo
        if n == 0:
            return ""
        has_parent, kind = self.has_parent[lo:hi], self.kind[lo:hi]
        has_kind = kind != 0
        kind_piece = bulk.varint_piece(kind, has_kind)
        ids_len = 28 + 10 * has_parent.astype(np.int64)
        # proto3 leaves a zero time out (only a hand-made table has one)
        has_start, has_end = self.has_start[lo:hi], self.has_end[lo:hi]
        times_len = (1 + kind_piece[1]) * has_kind + 9 * (has_start + has_end)
        body_len = ids_len + self.name_len[lo:hi] + times_len + self.columns.size[lo:hi]
        if not isinstance(self.tail_len, int):
            body_len = body_len + self.tail_len[lo:hi]
        # tag and size, trace, span and parent IDs (each a whole row of its matrix)
        ids = _row_texts([
            bulk.const(n, b"\x12"), bulk.varint_piece(body_len),
            bulk.const(n, b"\x0a\x10"), (self.trace[lo:hi], np.full(n, 16)),
            bulk.const(n, b"\x12\x08"), (self.span_id[lo:hi], np.full(n, 8)),
            bulk.const(n, b"\x22\x08", has_parent),
            (self.parent[lo:hi], np.where(has_parent, 8, 0))])
        times = _row_texts([
            bulk.const(n, b"\x30", has_kind), kind_piece,
            bulk.const(n, b"\x39", has_start), (self.start[lo:hi], 8 * has_start),
            bulk.const(n, b"\x41", has_end), (self.end[lo:hi], 8 * has_end)])
        after: list[list[str]] = []
        for tail in (self.events, self.status, self.flags):
            if tail is not None:
                after.append(tail[lo:hi])
        return columns.interleave([ids, self.names[lo:hi], times,
                                   self.columns.texts[lo:hi], *after])


def _le(values: np.ndarray, width: int) -> np.ndarray:
    """Each value's ``width`` bytes, little-endian (fixed64 / fixed32), as a matrix."""
    kind = "<u8" if width == 8 else "<u4"
    return np.ascontiguousarray(np.asarray(values).astype(kind)).view(np.uint8).reshape(
        -1, width)


def _row_texts(pieces: list[bulk.Piece]) -> list[str]:
    """Each row of the pieces (see ``bulk.rows``) as latin-1 text. ``bulk.row_texts`` takes
    zero bytes at a row's end for padding: an ID or a time can end in one, so such rows get
    theirs back."""
    texts = bulk.row_texts(bulk.rows(pieces))
    want = np.sum([length for _, length in pieces], axis=0)
    got = np.fromiter(map(len, texts), np.int64, len(texts))
    for i in np.flatnonzero(got != want).tolist():
        texts[i] = texts[i].ljust(int(want[i]), "\0")
    return texts


@dataclass(frozen=True)
class SpanBatch:
    """Spans ``lo:hi`` of table ``table``."""

    table: int
    lo: int
    hi: int

    @property
    def spans(self) -> int:
        return self.hi - self.lo


CHUNK_SPANS = 20_000  # rows of a table read at once by a span writer
FIRST_CHUNK_SPANS = 1_250  # its first chunk: growing 4x a chunk up to CHUNK_SPANS


class TraceEncoder:
    """Requests of spans from ``tables``. Each table is read by a writer a chunk of rows
    at a time (:data:`CHUNK_SPANS`, or the batch's rows if more), from the first row a
    batch asks for: batches go forward through a table, so a chunk serves many requests,
    and memory holds one chunk a table. A table's first chunks are smaller
    (:data:`FIRST_CHUNK_SPANS`, four times more each time), so the first request goes out
    after reading about what it holds, not the first 20,000 spans of every table."""

    def __init__(self, tables: Sequence[SpanTable]) -> None:
        self.tables = tables
        self.attrs = _AttrCache()
        self._writers: dict[int, tuple[int, int, _Spans]] = {}
        self._read: dict[int, int] = {}  # chunks read so far, per table

    def _writer(self, batch: SpanBatch) -> tuple[int, _Spans]:
        got = self._writers.get(batch.table)
        if got is None or not got[0] <= batch.lo <= batch.hi <= got[1]:
            t = self.tables[batch.table]
            read = self._read[batch.table] = self._read.get(batch.table, 0) + 1
            size = min(CHUNK_SPANS, FIRST_CHUNK_SPANS << 2 * min(read - 1, 8))
            lo, hi = batch.lo, min(len(t), max(batch.hi, batch.lo + size))
            rows = t if (lo, hi) == (0, len(t)) else take_spans(t, slice(lo, hi))
            got = self._writers[batch.table] = (lo, hi, _Spans(rows, self.attrs))
        return got[0], got[2]

    def resource_spans(self, batch: SpanBatch) -> bytes:
        t = self.tables[batch.table]
        lo, writer = self._writer(batch)
        scope = field(1, text(1, t.scope_name) + text(2, t.scope_version))
        spans = writer.spans(batch.lo - lo, batch.hi - lo).encode("latin-1")
        resource = field(1, self.attrs.key_values(1, t.resource))
        schema = text(3, t.scope_schema_url) if t.scope_schema_url else b""
        return field(1, resource + field(2, scope + spans + schema))  # request.resource_spans

    def request(self, batches: Sequence[SpanBatch]) -> bytes:
        """``ExportTraceServiceRequest`` holding ``batches``."""
        return b"".join(self.resource_spans(b) for b in batches)


def plan_batches(tables: Sequence[SpanTable], max_spans: int,
                 first_ns: int | None = None,
                 first_spans: int | None = None) -> Iterator[list[SpanBatch]]:
    """Requests of at most ``max_spans`` spans, whole traces in time order: each request
    holds, from every table, the spans of the traces that began in one stretch of time.

    A trace is then complete when it arrives (Tempo writes it to a searchable block once
    it has been idle for ``max_trace_idle``, instead of joining parts sent seconds apart).
    ``first_ns``: the traces that began from then on go first, in time order, then the
    ones before it (Tempo takes traces in any order). A single trace of more than
    ``max_spans`` spans goes alone. Tables whose spans are not in order of their trace's
    start (a hand-made recording) are sent table by table. ``first_spans``: the first
    request holds at most that many (it is encoded, sent and written sooner)."""
    keys = _trace_starts(tables)
    if keys is None:
        yield from _table_by_table(tables, max_spans)
        return
    flat = np.sort(np.concatenate(keys)) if keys else np.empty(0, np.int64)
    first = max_spans if first_spans is None else min(first_spans, max_spans)
    if first_ns is None:
        yield from _stretches(keys, flat, max_spans, None, None, first)
    else:
        yield from _stretches(keys, flat, max_spans, first_ns, None, first)
        yield from _stretches(keys, flat, max_spans, None, first_ns)


def _stretches(keys: list[np.ndarray], flat: np.ndarray, max_spans: int,
               from_key: int | None, stop_key: int | None,
               first_spans: int | None = None) -> Iterator[list[SpanBatch]]:
    """The requests of the traces that began in [``from_key``, ``stop_key``) (None: no
    bound), the first of at most ``first_spans``; ``keys``: each table's trace starts,
    ``flat``: all of them, sorted."""
    done = 0 if from_key is None else int(np.searchsorted(flat, from_key, side="left"))
    last = flat.shape[0] if stop_key is None else int(np.searchsorted(flat, stop_key,
                                                                       side="left"))
    lo_key = from_key
    size = max_spans if first_spans is None else first_spans
    while done < last:
        target, size = done + size, max_spans
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
