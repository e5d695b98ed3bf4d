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


def entry_costs(stream: LogStream) -> np.ndarray:
    """What each entry weighs for Loki's rate limit: line and structured-metadata bytes."""
    lines = stream.lines
    if "".join(lines).isascii():
        size = np.fromiter(map(len, lines), np.int64, len(lines))
    else:
        size = np.fromiter((len(x.encode()) for x in lines), np.int64, len(lines))
    meta = [i for i, m in enumerate(stream.metadata) if m]
    if meta:
        size[meta] += np.fromiter(
            (len("".join(chain.from_iterable(stream.metadata[i])).encode()) for i in meta),
            np.int64, len(meta))
    return size


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


def _metadata_texts(entries: Sequence[tuple[tuple[str, str], ...]]) -> list[str]:
    """Each entry's ``structuredMetadata`` fields as latin-1 text."""
    if not entries:
        return []
    columns = list(zip(*entries)) if len(set(map(len, entries))) == 1 else []
    parts: list[Iterable[str]] = []
    for column in columns:  # the usual shape: the same names, values of one length
        values = list(map(itemgetter(1), column))
        names, sizes = set(map(itemgetter(0), column)), set(map(len, values))
        if len(names) != 1 or len(sizes) != 1 or not "".join(values).isascii():
            break
        parts += (repeat(_PREFIX[names.pop(), sizes.pop()]), values)
    else:
        if columns:
            return list(map("".join, zip(*parts)))
    if "".join([v for pairs in entries for _, v in pairs]).isascii():
        return ["".join([_PREFIX[k, len(v)] + v for k, v in pairs]) for pairs in entries]
    return ["".join([_PREFIX[k, len(b)] + b for k, b in
                     ((k, v.encode().decode("latin-1")) for k, v in pairs)])
            for pairs in entries]


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
