"""`--shard K/N`: split one incident deterministically so N processes (or machines) push
it exactly once together. Series and log streams go by a hash of their labels, spans by a
hash of their trace ID (a trace stays whole); the same input gives the same split on any
machine (SHA-256, not Python's salted hash)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from generator.model import Incident

from .errors import UsageError
from .slicing import take_spans


def parse_shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    try:
        index, total = int(k), int(n)
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected K/N, e.g. 0/2") from None
    if not sep or total < 1 or not 0 <= index < total:
        raise UsageError(f"--shard {text!r}: K must be in 0..N-1 and N >= 1")
    return index, total


def _bucket(key: bytes, total: int) -> int:
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % total


def _labels_key(labels: tuple[tuple[str, str], ...]) -> bytes:
    return "\x00".join(f"{k}\x01{v}" for k, v in labels).encode()


def shard(incident: Incident, index: int, total: int) -> Incident:
    if total == 1:
        return incident
    series = tuple(s for s in incident.series if _bucket(_labels_key(s.labels), total) == index)
    streams = tuple(s for s in incident.log_streams
                    if _bucket(_labels_key(s.labels), total) == index)
    tables = []
    for t in incident.span_tables:
        mine = np.array([_bucket(t.trace_id[i].tobytes(), total) == index for i in range(len(t))],
                        bool)
        if mine.any():
            tables.append(take_spans(t, np.flatnonzero(mine)))
    return replace(incident, series=series, log_streams=streams, span_tables=tuple(tables))
