"""Loki push encoder: protobuf ``PushRequest`` (snappy block) or JSON; pure, bytes out.

One request carries entries of one stream only, so a 400 that rejects part of it can be
attributed to that stream exactly, and nothing is sent twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cramjam

from generator.model import Labels, LogStream

from ..wire import field, tag, text, uint, varint

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


def _timestamp(t_ns: int) -> bytes:
    seconds, nanos = divmod(t_ns, NS_PER_S)
    return uint(1, seconds) + uint(2, nanos)


def proto_request(stream: LogStream, lo: int, hi: int) -> bytes:
    """Uncompressed ``PushRequest`` for entries ``lo:hi`` of ``stream``."""
    entries = []
    t = stream.t_ns
    for i in range(lo, hi):
        meta = b"".join(field(3, text(1, k) + text(2, v)) for k, v in stream.metadata[i])
        body = field(1, _timestamp(int(t[i]))) + text(2, stream.lines[i]) + meta
        entries.append(tag(2, 2) + varint(len(body)) + body)
    return field(1, text(1, label_string(stream.labels)) + b"".join(entries))


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
