"""Loki push encoder: protobuf ``PushRequest`` (snappy block) or JSON; pure, bytes out.

One request carries entries of one stream only, so a 400 that rejects part of it can be
attributed to that stream exactly, and nothing is sent twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain

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


_PAIR_PREFIX: dict[tuple[str, int], str] = {}


def _metadata_text(pairs: tuple[tuple[str, str], ...]) -> str:
    """``structuredMetadata`` fields as latin-1 text (one code point per byte). The bytes
    before each value depend only on the name and the value's length, so they are cached."""
    out = ""
    for k, v in pairs:
        value = v if v.isascii() else v.encode().decode("latin-1")
        prefix = _PAIR_PREFIX.get((k, len(value)))
        if prefix is None:
            name = text(1, k)
            inner = len(name) + (len(text(2, v)) if value else 0)
            prefix = (b"\x1a" + varint(inner) + name
                      + ((b"\x12" + varint(len(value))) if value else b"")).decode("latin-1")
            _PAIR_PREFIX[(k, len(value))] = prefix
        out += prefix + value
    return out


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
    meta = [_metadata_text(m) if m else "" for m in stream.metadata[lo:hi]]
    meta_len = np.fromiter(map(len, meta), np.int64, n)
    sec = bulk.varint_piece(seconds, has_s)
    nano = bulk.varint_piece(nanos, has_n)
    size = bulk.varint_piece(line_len, has_line)
    ts_len = (1 + sec[1]) * has_s + (1 + nano[1]) * has_n
    body_len = 2 + ts_len + (1 + size[1] + line_len) * has_line + meta_len
    matrix = bulk.rows([
        bulk.const(n, b"\x12"), bulk.varint_piece(body_len),
        bulk.const(n, b"\x0a"), bulk.varint_piece(ts_len),
        bulk.const(n, b"\x08", has_s), sec, bulk.const(n, b"\x10", has_n), nano,
        bulk.const(n, b"\x12", has_line), size,
    ])
    heads = bulk.row_texts(matrix)
    if np.any((t == 0) & ~has_line):
        # Such a head ends in its empty Timestamp (0x0a 0x00), a zero taken for padding.
        head_len = 1 + bulk.varint_len(body_len) + body_len - meta_len - line_len
        heads = [h.ljust(k, "\0") for h, k in zip(heads, head_len.tolist())]
    entries = "".join(chain.from_iterable(zip(heads, texts, meta))).encode("latin-1")
    return field(1, text(1, label_string(stream.labels)) + entries)


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
