"""Prometheus remote-write 1.0 encoder: pure, vectorized, bytes out.

Samples are written straight into protobuf wire format with numpy (one matrix per batch,
no message object per sample); labels and exemplars are written per series. The result
decodes with ``remote_pb2.WriteRequest`` (see tests) and is snappy block-compressed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cramjam
import numpy as np

from generator.model import Labels, MetricFamily, Series

from ..wire import varint

HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
_TYPES = {"unknown": 0, "counter": 1, "gauge": 2, "histogram": 3, "gaugehistogram": 4,
          "summary": 5, "info": 6, "stateset": 7}


@dataclass(frozen=True)
class Piece:
    """Samples ``lo:hi`` of series ``series`` (and its exemplars ``ex_lo:ex_hi``)."""

    series: int
    lo: int
    hi: int
    ex_lo: int = 0
    ex_hi: int = 0

    @property
    def samples(self) -> int:
        return self.hi - self.lo

    @property
    def exemplars(self) -> int:
        return self.ex_hi - self.ex_lo


def _field(tag_byte: int, payload: bytes) -> bytes:
    return bytes((tag_byte,)) + varint(len(payload)) + payload


_LABEL_CACHE: dict[tuple[str, str], bytes] = {}


def _label(name: str, value: str) -> bytes:
    key = (name, value)
    out = _LABEL_CACHE.get(key)
    if out is None:
        out = _field(0x0A, _field(0x0A, name.encode()) + _field(0x12, value.encode()))
        if len(_LABEL_CACHE) < 200_000:  # label pairs repeat across series; bound the cache
            _LABEL_CACHE[key] = out
    return out


def encode_labels(labels: Labels) -> bytes:
    """Repeated ``Label`` fields (tag 1 of TimeSeries/Exemplar), in the given order."""
    return b"".join([_label(name, value) for name, value in labels])


_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def varint_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varints of int64 ``values``: a (n, width) byte matrix (width = the longest) and each
    row's length."""
    u = np.asarray(values, np.int64).view(np.uint64)
    length = 1 + np.searchsorted(_VARINT_LIMITS, u, side="right").astype(np.int64)
    width = int(length.max(initial=1))
    shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
    groups = ((u[:, None] >> shifts[None, :]) & np.uint64(0x7F)).astype(np.uint8)
    more = np.arange(width)[None, :] < (length[:, None] - 1)
    groups |= (more * 0x80).astype(np.uint8)
    return groups, length


def encode_samples(t_ms: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repeated ``Sample`` fields (tag 2 of TimeSeries), all at once, in canonical protobuf
    form (a +0.0 value or a 0 timestamp is left out, as protobuf itself does).

    Returns the concatenated bytes and the end offset of each sample in them.
    """
    n = t_ms.shape[0]
    groups, vlen = varint_matrix(t_ms)
    width = 12 + int(vlen.max(initial=1))
    v = np.ascontiguousarray(values, dtype="<f8")
    has_v = v.view(np.uint64) != 0
    has_t = t_ms != 0
    rows = np.zeros((n, width), np.uint8)
    rows[:, 0] = 0x12
    rows[:, 1] = (9 * has_v + (1 + vlen) * has_t).astype(np.uint8)  # Sample message size
    rows[:, 2] = 0x09
    rows[:, 3:11] = v.view(np.uint8).reshape(n, 8)
    rows[:, 11] = 0x10
    rows[:, 12:12 + groups.shape[1]] = groups
    col = np.arange(width)[None, :]
    keep = ((col < 2) | ((col < 11) & has_v[:, None])
            | ((col >= 11) & (col < 12 + vlen[:, None]) & has_t[:, None]))
    return rows[keep], np.cumsum(2 + rows[:, 1].astype(np.int64))


_EX_SPAN = _field(0x0A, _field(0x0A, b"span_id") + _field(0x12, bytes(16)))[:-16]
_EX_TRACE = _field(0x0A, _field(0x0A, b"trace_id") + _field(0x12, bytes(32)))[:-32]


def encode_exemplars(series: Series, lo: int, hi: int) -> bytes:
    """Repeated ``Exemplar`` fields (tag 3 of TimeSeries): labels span_id, trace_id."""
    e = series.exemplars
    values = np.ascontiguousarray(e.value[lo:hi], dtype="<f8")
    out = []
    for i in range(hi - lo):
        value = values[i].tobytes()
        t = int(e.t_ms[lo + i])
        body = b"".join((
            _EX_SPAN, e.span_id[lo + i].tobytes().hex().encode(),
            _EX_TRACE, e.trace_id[lo + i].tobytes().hex().encode(),
            b"\x11" + value if value != bytes(8) else b"",
            b"\x18" + varint(t) if t else b""))
        out.append(b"\x1a" + varint(len(body)) + body)
    return b"".join(out)


class SeriesEncoder:
    """Encodes batches of :class:`Piece` of a fixed list of series; caches label bytes."""

    def __init__(self, series: Sequence[Series]) -> None:
        self.series = series
        self._labels: dict[int, bytes] = {}

    def labels(self, index: int) -> bytes:
        cached = self._labels.get(index)
        if cached is None:
            cached = self._labels[index] = encode_labels(self.series[index].labels)
        return cached

    def write_request(self, pieces: Sequence[Piece]) -> bytes:
        """Uncompressed ``WriteRequest`` protobuf holding ``pieces``."""
        if not pieces:
            return b""
        t = np.concatenate([self.series[p.series].t_ms[p.lo:p.hi] for p in pieces])
        v = np.concatenate([self.series[p.series].values[p.lo:p.hi] for p in pieces])
        blob, ends = encode_samples(t, v)
        raw = blob.tobytes()
        out = []
        first = 0
        for p in pieces:
            last = first + p.samples
            lo_b = int(ends[first - 1]) if first else 0
            hi_b = int(ends[last - 1]) if last else 0
            body = self.labels(p.series) + raw[lo_b:hi_b]
            if p.exemplars:
                body += encode_exemplars(self.series[p.series], p.ex_lo, p.ex_hi)
            out.append(_field(0x0A, body))
            first = last
        return b"".join(out)


def metadata_request(families: Sequence[MetricFamily]) -> bytes:
    """A ``WriteRequest`` carrying only metric metadata (type, help, unit)."""
    out = []
    for f in families:
        kind = _TYPES.get(f.type, 0)
        body = (b"\x08" + varint(kind) if kind else b"") + _field(0x12, f.name.encode())
        body += _field(0x22, f.help.encode()) if f.help else b""
        body += _field(0x2A, f.unit.encode()) if f.unit else b""
        out.append(_field(0x1A, body))
    return b"".join(out)


def compress(body: bytes) -> bytes:
    """Snappy *block* format, as remote-write requires (never the framed format)."""
    return bytes(cramjam.snappy.compress_raw(body))


def plan_pieces(series: Sequence[Series], max_samples: int) -> list[Piece]:
    """Cut every series into consecutive pieces of at most ``max_samples`` samples, with
    each exemplar in the piece whose time range reaches it."""
    pieces = []
    for i, s in enumerate(series):
        n = len(s)
        ex_t = s.exemplars.t_ms
        for lo in range(0, n, max_samples):
            hi = min(lo + max_samples, n)
            last_piece = hi == n
            ex_lo = int(np.searchsorted(ex_t, s.t_ms[lo], "left")) if lo else 0
            ex_hi = len(ex_t) if last_piece else int(np.searchsorted(ex_t, s.t_ms[hi], "left"))
            pieces.append(Piece(i, lo, hi, ex_lo, ex_hi))
    return pieces
