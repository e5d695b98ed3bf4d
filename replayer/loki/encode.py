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


def plan_batches(streams: Sequence[LogStream], max_entries: int,
                 max_bytes: int) -> Iterator[EntryBatch]:
    """Consecutive entries of one stream, at most ``max_entries`` and about ``max_bytes``
    of line and metadata text each."""
    for si, s in enumerate(streams):
        lo, size = 0, 0
        for i, line in enumerate(s.lines):
            cost = len(line) + sum(len(k) + len(v) for k, v in s.metadata[i]) + 16
            if i > lo and (i - lo >= max_entries or size + cost > max_bytes):
                yield EntryBatch(si, lo, i)
                lo, size = i, 0
            size += cost
        if len(s) > lo:
            yield EntryBatch(si, lo, len(s))


def entry_bytes(stream: LogStream, lo: int, hi: int) -> int:
    """What Loki's rate limit counts: line and structured-metadata bytes."""
    return sum(len(stream.lines[i].encode()) + sum(len(k) + len(v) for k, v in
                                                   stream.metadata[i]) for i in range(lo, hi))


_PAIR_PREFIX: dict[tuple[str, int], bytes] = {}


def _metadata_bytes(pairs: tuple[tuple[str, str], ...]) -> bytes:
    """``structuredMetadata`` fields; the bytes before each value depend only on the name
    and the value's length, so they are cached."""
    out = []
    for k, v in pairs:
        value = v.encode()
        prefix = _PAIR_PREFIX.get((k, len(value)))
        if prefix is None:
            name = text(1, k)
            inner = len(name) + (len(text(2, v)) if value else 0)
            prefix = (b"\x1a" + varint(inner) + name
                      + ((b"\x12" + varint(len(value))) if value else b""))
            _PAIR_PREFIX[(k, len(value))] = prefix
        out.append(prefix + value)
    return b"".join(out)


def proto_request(stream: LogStream, lo: int, hi: int) -> bytes:
    """Uncompressed ``PushRequest`` for entries ``lo:hi`` of ``stream``, built for all
    entries at once (canonical protobuf: equal to what push_pb2 serialises)."""
    n = hi - lo
    if n == 0:
        return field(1, text(1, label_string(stream.labels)))
    t = np.asarray(stream.t_ns[lo:hi], np.int64)
    seconds, nanos = np.divmod(t, NS_PER_S)
    has_s, has_n = seconds != 0, nanos != 0
    ts_len = (1 + bulk.varint_len(seconds)) * has_s + (1 + bulk.varint_len(nanos)) * has_n
    texts = stream.lines[lo:hi]
    joined = "".join(texts)
    lines = ([t.encode("ascii") for t in texts] if joined.isascii()
             else [t.encode() for t in texts])
    line_len = np.fromiter(map(len, lines), np.int64, n)
    has_line = line_len > 0
    meta = [_metadata_bytes(m) if m else b"" for m in stream.metadata[lo:hi]]
    meta_len = np.fromiter(map(len, meta), np.int64, n)
    body_len = 2 + ts_len + (1 + bulk.varint_len(line_len) + line_len) * has_line + meta_len
    head, head_len = bulk.pack([
        bulk.const(n, b"\x12"), bulk.varint_piece(body_len),
        bulk.const(n, b"\x0a"), bulk.varint_piece(ts_len),
        bulk.const(n, b"\x08", has_s), bulk.varint_piece(seconds, has_s),
        bulk.const(n, b"\x10", has_n), bulk.varint_piece(nanos, has_n),
        bulk.const(n, b"\x12", has_line), bulk.varint_piece(line_len, has_line),
    ])
    # The numeric heads are built for all entries at once; bytes.join interleaves them with
    # the lines and metadata in C (cheaper than a byte-level gather for text).
    blob = head.tobytes()
    ends = np.cumsum(head_len).tolist()
    starts = [0, *ends[:-1]]
    heads = [blob[a:b] for a, b in zip(starts, ends)]
    entries = b"".join(chain.from_iterable(zip(heads, lines, meta)))
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
