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

from .. import bulk
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


def entry_costs(stream: LogStream) -> np.ndarray:
    """What each entry weighs for Loki's rate limit: line and structured-metadata bytes."""
    lines = stream.lines
    if "".join(lines).isascii():
        size = np.fromiter(map(len, lines), np.int64, len(lines))
    else:
        size = np.fromiter((len(x.encode()) for x in lines), np.int64, len(lines))
    if any(stream.metadata):
        size += _metadata_sizes(stream.metadata)
    return size


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
        n = len(s)
        cost = (costs[si] if costs is not None else entry_costs(s)) + 16
        total = np.cumsum(cost)
        lo = 0
        while lo < n:
            before = int(total[lo] - cost[lo])
            hi = int(np.searchsorted(total, before + max_bytes, "right"))
            hi = min(max(hi, lo + 1), lo + max_entries, n)
            yield EntryBatch(si, lo, hi)
            lo = hi


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
    """Each entry's ``structuredMetadata`` fields as latin-1 text.

    Entries are grouped by their field names (OTLP-ingested lines carry fifteen, the same
    fifteen for most lines of a stream), and each group is built a column at a time: a
    name's prefix depends only on the value's length, looked up in C for the column."""
    if not entries:
        return []
    out: list[str] = [""] * len(entries)
    for rows, group, columns in _by_shape(entries):
        if columns is not None:
            built = _same_names(group, tuple(col[0][0] for col in columns), columns)
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
                columns: list[tuple[tuple[str, str], ...]] | None = None) -> list[str]:
    """``_metadata_texts`` of entries that all carry ``names``, in that order
    (``columns``: the entries' pairs as columns, when already at hand)."""
    if not names:
        return [""] * len(entries)
    parts: list[Iterable[str]] = []
    for column, name in zip(columns if columns is not None else zip(*entries), names):
        values = list(map(_SECOND, column))
        if not "".join(values).isascii():
            values = [v.encode().decode("latin-1") for v in values]
        sized = _SIZED[name]
        sizes = set(map(len, values))
        parts += (repeat(sized[sizes.pop()]) if len(sizes) == 1
                  else map(sized.__getitem__, map(len, values)), values)
    return list(map("".join, zip(*parts)))


def proto_request(stream: LogStream, lo: int, hi: int) -> bytes:
    """Uncompressed ``PushRequest`` for entries ``lo:hi`` of ``stream``, built for all
    entries at once (canonical protobuf: equal to what push_pb2 serialises).

    The numeric head of every entry is built in one byte matrix; the heads, lines and
    metadata are then joined as latin-1 text (a byte per code point), which CPython
    concatenates in C without a bytes object per line."""
    n = hi - lo
    if n == 0:
        return field(1, text(1, label_string(stream.labels)))
    t = np.asarray(stream.t_ns[lo:hi], np.int64)
    seconds, nanos = np.divmod(t, NS_PER_S)
    has_s, has_n = seconds != 0, nanos != 0
    texts: Sequence[str] = stream.lines[lo:hi]
    if not "".join(texts).isascii():
        texts = [x.encode().decode("latin-1") for x in texts]
    line_len = np.fromiter(map(len, texts), np.int64, n)
    has_line = line_len > 0
    metadata = stream.metadata[lo:hi]
    with_meta = list(itertools.compress(range(n), metadata))
    meta = _metadata_texts([metadata[i] for i in with_meta])
    meta_len = np.zeros(n, np.int64)
    meta_len[with_meta] = [len(m) for m in meta]
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
    # An entry's metadata goes in front of the next entry's head, and the stream's own
    # head (tag, size, labels) in front of the first: two parts an entry, one copy in all.
    labels = text(1, label_string(stream.labels))
    total = int(body_len.sum() + body[1].sum()) + n + len(labels)
    heads.append("")
    for i, m in zip(with_meta, meta):
        heads[i + 1] = m + heads[i + 1]
    heads[0] = (b"\x0a" + varint(total) + labels).decode("latin-1") + heads[0]
    parts = list(chain.from_iterable(zip(heads, texts)))
    parts.append(heads[n])
    return "".join(parts).encode("latin-1")


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
