"""Loki push encoder: protobuf ``PushRequest`` (snappy block) or JSON; pure, bytes out.

One request carries entries of one stream only, so a 400 that rejects part of it can be
attributed to that stream exactly, and nothing is sent twice.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter

import cramjam
import numpy as np

from generator.model import Labels, LogStream

from .. import bulk, columns
from ..wire import field, text, varint

PROTO_HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
JSON_HEADERS = {"Content-Type": "application/json"}
NS_PER_S = 1_000_000_000


def label_string(labels: Labels) -> str:
    """Loki's stream selector form: ``{level="info", service_name="payment-service"}``."""
    return "{" + ", ".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class EntryBatch:
    stream: int
    lo: int
    hi: int

    @property
    def entries(self) -> int:
        return self.hi - self.lo


_FIRST = itemgetter(0)
_SECOND = itemgetter(1)


def _metadata_sizes(entries: Sequence[tuple[tuple[str, str], ...]]) -> np.ndarray:
    """Bytes of each entry's metadata names and values (joined in C, no Python call an
    entry)."""
    joined = list(map("".join, map(chain.from_iterable, entries)))
    if "".join(joined).isascii():
        return np.fromiter(map(len, joined), np.int64, len(joined))
    return np.fromiter((len(x.encode()) for x in joined), np.int64, len(joined))


def _by_shape(entries: Sequence[tuple[tuple[str, str], ...]]) -> Iterator[
        tuple[np.ndarray, Sequence[tuple[tuple[str, str], ...]],
              list[tuple[tuple[str, str], ...]] | None]]:
    """The entries by their number of metadata pairs: (their indices, them, their pairs as
    columns when they all carry the same names in the same order, else None). OTLP-ingested
    lines of a stream mostly share one set of names, so this is a few groups, each checked
    a column at a time in C."""
    if not entries:
        return
    lens = np.fromiter(map(len, entries), np.int64, len(entries))
    for n in np.unique(lens).tolist():
        rows = np.flatnonzero(lens == n)
        group = entries if rows.shape[0] == len(entries) else \
            [entries[i] for i in rows.tolist()]
        yield rows, group, _uniform_columns(group) if n else None


def _uniform_columns(entries: Sequence[tuple[tuple[str, str], ...]],
                     ) -> list[tuple[tuple[str, str], ...]] | None:
    """``entries`` (of one length) as columns when every one carries the same names in the
    same order, else None."""
    columns = list(zip(*entries))
    for col in columns:
        if len(set(map(_FIRST, col))) != 1:
            return None
    return columns


def _by_names(entries: Sequence[tuple[tuple[str, str], ...]]) -> dict[tuple[str, ...], list[int]]:
    """The entries' indices by the names their metadata carries, in first-seen order."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, names in enumerate([tuple(map(_FIRST, pairs)) for pairs in entries]):
        groups.setdefault(names, []).append(i)
    return groups


def plan_batches(streams: Sequence[LogStream], max_entries: int, max_bytes: int,
                 costs: Sequence[np.ndarray] | None = None) -> Iterator[EntryBatch]:
    """Consecutive entries of one stream, at most ``max_entries`` and about ``max_bytes``
    (line and metadata bytes, plus 16 an entry) each; at least one entry a batch."""
    for si, s in enumerate(streams):
        yield from plan_range(si, costs[si] if costs is not None else entry_costs(s), 0,
                              max_entries, max_bytes)


def plan_range(stream: int, costs: np.ndarray, lo: int, max_entries: int,
               max_bytes: int) -> Iterator[EntryBatch]:
    """``plan_batches`` over entries ``lo:lo + len(costs)`` of one stream, whose costs
    (without the 16 an entry) are ``costs``."""
    cost = costs + 16
    total = np.cumsum(cost)
    n = cost.shape[0]
    at = 0
    while at < n:
        before = int(total[at] - cost[at])
        hi = int(np.searchsorted(total, before + max_bytes, "right"))
        hi = min(max(hi, at + 1), at + max_entries, n)
        yield EntryBatch(stream, lo + at, lo + hi)
        at = hi


class _Prefixes(dict[tuple[str, int], str]):
    """The bytes before a ``structuredMetadata`` value, as latin-1 text (a code point per
    byte), by (name, the value's length in bytes): they depend on nothing else."""

    def __missing__(self, key: tuple[str, int]) -> str:
        name, size = key
        name_field = text(1, name)
        inner = len(name_field) + (1 + len(varint(size)) + size if size else 0)
        prefix = (b"\x1a" + varint(inner) + name_field
                  + (b"\x12" + varint(size) if size else b"")).decode("latin-1")
        self[key] = prefix
        return prefix


_PREFIX = _Prefixes()


class _BySize(dict[int, str]):
    """One metadata name's prefixes, by the value's length in bytes."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def __missing__(self, size: int) -> str:
        prefix = self[size] = _PREFIX[self.name, size]
        return prefix


class _Names(dict[str, _BySize]):
    def __missing__(self, name: str) -> _BySize:
        by_size = self[name] = _BySize(name)
        return by_size


_SIZED = _Names()


def _metadata_texts(entries: Sequence[tuple[tuple[str, str], ...]]) -> list[str]:
    """Each entry's ``structuredMetadata`` fields as latin-1 text, for entries of mixed
    shapes (different names or pair counts).

    Entries are grouped by their field names, and each group is built a column at a time:
    a name's prefix depends only on the value's length, looked up in C for the column."""
    if not entries:
        return []
    out: list[str] = [""] * len(entries)
    for rows, group, cols in _by_shape(entries):
        if cols is not None:
            built = _same_names(group, tuple(col[0][0] for col in cols), cols)
            if len(group) == len(entries):
                return built
            for i, text in zip(rows.tolist(), built):
                out[i] = text
            continue
        sub = _by_names(group)
        for names, idx in sub.items():
            for i, text in zip(idx, _same_names([group[j] for j in idx], names)):
                out[int(rows[i])] = text
    return out


def _same_names(entries: Sequence[tuple[tuple[str, str], ...]], names: tuple[str, ...],
                by_column: list[tuple[tuple[str, str], ...]] | None = None) -> list[str]:
    """``_metadata_texts`` of entries that all carry ``names``, in that order
    (``by_column``: the entries' pairs as columns, when already at hand)."""
    if not names:
        return [""] * len(entries)
    parts: list[Iterable[str]] = []
    for column, name in zip(by_column if by_column is not None else zip(*entries), names):
        values = columns.latin1(list(map(_SECOND, column)))
        sized = _SIZED[name]
        sizes = set(map(len, values))
        parts += (repeat(sized[sizes.pop()]) if len(sizes) == 1
                  else map(sized.__getitem__, map(len, values)), values)
    return list(map("".join, zip(*parts)))


def _column(pairs: list[tuple[str, str]], same: bool,
            ) -> tuple[list[columns.Part], columns.Sizes, columns.Sizes]:
    """One metadata name's fields (see ``columns.by_columns``): a value's prefix depends
    only on its size, so a column of one size is a constant prefix and the values. The
    weight is Loki's: name and value bytes."""
    name = pairs[0][0]
    sized = _SIZED[name]
    name_cost = len(name.encode())
    if same:
        value = columns.latin1((pairs[0][1],))[0]
        piece = sized[len(value)] + value
        return [piece], len(piece), name_cost + len(value)
    values = columns.latin1(list(map(_SECOND, pairs)))
    lens = np.fromiter(map(len, values), np.int64, len(values))
    if lens.min() == lens.max():
        prefix = sized[int(lens[0])]
        return [prefix, values], lens + len(prefix), lens + name_cost
    prefixes = list(map(sized.__getitem__, lens.tolist()))
    return ([prefixes, values], lens + np.fromiter(map(len, prefixes), np.int64, len(lens)),
            lens + name_cost)


def _each(entries: Sequence[tuple[tuple[str, str], ...]]) -> tuple[list[str], np.ndarray]:
    """Entries of any shape, one text each ("" for none), and their weights."""
    texts = [""] * len(entries)
    with_meta = list(itertools.compress(range(len(entries)), entries))
    for i, t in zip(with_meta, _metadata_texts([entries[i] for i in with_meta])):
        texts[i] = t
    return texts, _metadata_sizes(entries)


class StreamEncoder:
    """Entries of one stream ready to encode (``lo:hi`` of it; all by default): lines as
    latin-1 text, metadata by columns (``replayer.columns``), each entry's cost for
    pacing. Built once, then ``request`` takes any range of them: the analysis is not
    repeated for every batch."""

    def __init__(self, stream: LogStream, lo: int = 0, hi: int | None = None) -> None:
        hi = len(stream) if hi is None else hi
        self.stream, self.lo = stream, lo
        self.texts = columns.latin1(stream.lines[lo:hi])
        self.line_len = np.fromiter(map(len, self.texts), np.int64, hi - lo)
        self.meta = columns.by_columns(stream.metadata[lo:hi], _column,
                                       _each)
        self.costs = self.line_len + self.meta.weight
        self.labels = text(1, label_string(stream.labels))

    def request(self, lo: int, hi: int) -> bytes:
        """Uncompressed ``PushRequest`` for entries ``lo:hi`` of the stream, built for all
        entries at once (canonical protobuf: equal to what push_pb2 serialises).

        The numeric head of every entry is built in one byte matrix; heads, lines and
        metadata parts are then joined as latin-1 text (a byte per code point) in C,
        without a bytes object per line."""
        n = hi - lo
        if n == 0:
            return field(1, self.labels)
        a, b = lo - self.lo, hi - self.lo
        t = np.asarray(self.stream.t_ns[lo:hi], np.int64)
        seconds, nanos = np.divmod(t, NS_PER_S)
        has_s, has_n = seconds != 0, nanos != 0
        line_len = self.line_len[a:b]
        meta_len = self.meta.size[a:b]
        has_line = line_len > 0
        sec = bulk.varint_piece(seconds, has_s)
        nano = bulk.varint_piece(nanos, has_n)
        size = bulk.varint_piece(line_len, has_line)
        ts_len = (1 + sec[1]) * has_s + (1 + nano[1]) * has_n
        body_len = 2 + ts_len + (1 + size[1] + line_len) * has_line + meta_len
        body = bulk.varint_piece(body_len)
        matrix = bulk.rows([
            bulk.const(n, b"\x12"), body,
            bulk.const(n, b"\x0a"), bulk.varint_piece(ts_len),
            bulk.const(n, b"\x08", has_s), sec, bulk.const(n, b"\x10", has_n), nano,
            bulk.const(n, b"\x12", has_line), size,
        ])
        heads = bulk.row_texts(matrix)
        if np.any((t == 0) & ~has_line):
            # Such a head ends in its empty Timestamp (0x0a 0x00), a zero taken for padding.
            head_len = 1 + bulk.varint_len(body_len) + body_len - meta_len - line_len
            heads = [h.ljust(k, "\0") for h, k in zip(heads, head_len.tolist())]
        # the stream's own head (tag, size, labels) goes in front of the first entry's
        total = int(body_len.sum() + body[1].sum()) + n + len(self.labels)
        heads[0] = (b"\x0a" + varint(total) + self.labels).decode("latin-1") + heads[0]
        return columns.interleave([heads, self.texts[a:b], self.meta.texts[a:b]]).encode(
            "latin-1")


def entry_costs(stream: LogStream) -> np.ndarray:
    """What each entry weighs for Loki's rate limit: line and structured-metadata bytes."""
    return StreamEncoder(stream).costs


def proto_request(stream: LogStream, lo: int, hi: int) -> bytes:
    """Uncompressed ``PushRequest`` for entries ``lo:hi`` of ``stream`` (see
    ``StreamEncoder``; a sender with many batches of a stream keeps one encoder)."""
    return StreamEncoder(stream, lo, hi).request(lo, hi)


def compress(body: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(body))


def json_request(stream: LogStream, lo: int, hi: int) -> bytes:
    values = []
    for i in range(lo, hi):
        row: list[object] = [str(int(stream.t_ns[i])), stream.lines[i]]
        if stream.metadata[i]:
            row.append(dict(stream.metadata[i]))
        values.append(row)
    return json.dumps({"streams": [{"stream": dict(stream.labels), "values": values}]},
                      separators=(",", ":"), ensure_ascii=False).encode()
