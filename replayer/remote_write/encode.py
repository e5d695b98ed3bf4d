"""Prometheus remote-write 1.0 encoder: pure, vectorized, bytes out.

Samples are written straight into protobuf wire format with numpy (one matrix per batch,
no message object per sample); labels and exemplars are written per series. The result
decodes with ``remote_pb2.WriteRequest`` (see tests) and is snappy block-compressed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import NamedTuple

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


class Piece(NamedTuple):
    """Samples ``lo:hi`` of series ``series`` (and its exemplars ``ex_lo:ex_hi``); a tuple,
    because a day-long scale load plans hundreds of thousands of them."""

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
    """Repeated ``Label`` fields (tag 1 of TimeSeries/Exemplar), in the given order.

    The pairs are looked up in the cache as they are (tuples), in C; only the misses go
    through Python (a load labels thousands of series that share most pairs)."""
    parts = list(map(_LABEL_CACHE.get, labels))
    if None in parts:
        parts = [p if p is not None else _label(*pair) for p, pair in zip(parts, labels)]
    return b"".join(parts)  # type: ignore[arg-type]


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
    t_varints = time_varints(t_ms)
    if t_varints is not None:  # every sample a fixed-size row; +0.0 ones shortened after
        rows = sample_rows(values, t_varints.shape[1])
        rows[:, 12:] = t_varints
        record = rows.shape[1]
        zero = np.ascontiguousarray(values, dtype="<f8").view(np.uint64) == 0
        if not zero.any():
            return rows.reshape(-1), np.arange(1, n + 1, dtype=np.int64) * record
        rows[zero, 1] = record - 11
        rows[zero, 2:record - 9] = rows[zero, 11:]
        keep = np.ones((n, record), bool)
        keep[zero, record - 9:] = False
        return rows[keep], np.cumsum(np.where(zero, record - 9, record))
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


def time_varints(t_ms: np.ndarray) -> np.ndarray | None:
    """The timestamps' varints as an (n, L) byte matrix when they all have the same length L
    (true of any batch of epoch milliseconds within years of each other), else None."""
    if t_ms.shape[0] == 0:
        return None
    t = np.asarray(t_ms, np.int64)
    lo, hi = int(t.min()), int(t.max())
    width = (hi.bit_length() + 6) // 7
    if lo <= 0 or (lo.bit_length() + 6) // 7 != width:
        return None
    out = np.empty((t.shape[0], width), np.uint8)
    u = t.view(np.uint64)
    for k in range(width):
        byte = (u >> np.uint64(7 * k)) & np.uint64(0x7F)
        if k < width - 1:
            byte |= np.uint64(0x80)
        out[:, k] = byte
    return out


def sample_rows(values: np.ndarray, width_t: int) -> np.ndarray:
    """Fixed-size ``Sample`` rows (12 + ``width_t`` bytes) with everything but the
    timestamp varint, which the caller writes into ``rows[:, 12:]``."""
    n = values.shape[0]
    rows = np.empty((n, 12 + width_t), np.uint8)
    rows[:, 0] = 0x12
    rows[:, 1] = 10 + width_t
    rows[:, 2] = 0x09
    rows[:, 3:11] = np.ascontiguousarray(values, dtype="<f8").view(np.uint8).reshape(n, 8)
    rows[:, 11] = 0x10
    return rows


_EX_SPAN = _field(0x0A, _field(0x0A, b"span_id") + _field(0x12, bytes(16)))[:-16]
_EX_TRACE = _field(0x0A, _field(0x0A, b"trace_id") + _field(0x12, bytes(32)))[:-32]


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def hex_matrix(ids: np.ndarray) -> np.ndarray:
    """(n, k) id bytes -> (n, 2k) lower-case hex ASCII, vectorized."""
    out = np.empty((ids.shape[0], ids.shape[1] * 2), np.uint8)
    out[:, 0::2] = _HEX[ids >> 4]
    out[:, 1::2] = _HEX[ids & 0x0F]
    return out


def exemplar_rows(values: np.ndarray, t_ms: np.ndarray, span_ids: np.ndarray,
                  trace_ids: np.ndarray) -> tuple[bytes, np.ndarray]:
    """``Exemplar`` fields (tag 3 of TimeSeries) with labels span_id and trace_id, for many
    exemplars at once (canonical: a +0.0 value or 0 timestamp is left out). Returns the
    bytes back to back and each exemplar's length."""
    from .. import bulk

    n = values.shape[0]
    values = np.ascontiguousarray(values, dtype="<f8")
    t = np.asarray(t_ms, np.int64)
    has_v, has_t = values.view(np.uint64) != 0, t != 0
    t_varints = time_varints(t) if has_v.all() else None
    if t_varints is not None:  # the usual case: every exemplar the same size, no packing
        body = len(_EX_SPAN) + 16 + len(_EX_TRACE) + 32 + 9 + 1 + t_varints.shape[1]
        lead = b"\x1a" + varint(body) + _EX_SPAN
        rows = np.empty((n, len(lead) + body - len(_EX_SPAN)), np.uint8)
        at = 0
        for part in (lead, hex_matrix(span_ids), _EX_TRACE, hex_matrix(trace_ids), b"\x11",
                     values.view(np.uint8).reshape(n, 8), b"\x18", t_varints):
            if isinstance(part, bytes):
                rows[:, at:at + len(part)] = np.frombuffer(part, np.uint8)
                at += len(part)
            else:
                rows[:, at:at + part.shape[1]] = part
                at += part.shape[1]
        return rows.tobytes(), np.full(n, rows.shape[1], np.int64)
    body_len = (len(_EX_SPAN) + 16 + len(_EX_TRACE) + 32 + 9 * has_v
                + (1 + bulk.varint_len(t)) * has_t)
    packed, row_len = bulk.pack([
        bulk.const(n, b"\x1a"), bulk.varint_piece(body_len),
        bulk.const(n, _EX_SPAN), (hex_matrix(span_ids), np.full(n, 16)),
        bulk.const(n, _EX_TRACE), (hex_matrix(trace_ids), np.full(n, 32)),
        bulk.const(n, b"\x11", has_v),
        (values.view(np.uint8).reshape(n, 8), np.where(has_v, 8, 0)),
        bulk.const(n, b"\x18", has_t), bulk.varint_piece(t, has_t),
    ])
    return packed.tobytes(), row_len


def encode_exemplars(series: Series, lo: int, hi: int) -> bytes:
    e = series.exemplars
    if hi <= lo:
        return b""
    return exemplar_rows(e.value[lo:hi], e.t_ms[lo:hi], e.span_id[lo:hi], e.trace_id[lo:hi])[0]


class Grid(NamedTuple):
    """A timestamp array several series share, encoded once: a ``Sample`` row for each
    timestamp, and the whole bytes of a +0.0-valued ``Sample`` at each timestamp."""

    t_ms: np.ndarray  # kept so that its id stays this array's
    rows: np.ndarray  # (T, 12 + L) Sample rows with every byte but the value's
    zero_samples: memoryview  # T rows of 3 + L bytes: 0x12, 1 + L, 0x10, varint

    @classmethod
    def of(cls, t_ms: np.ndarray) -> Grid | None:
        varints = time_varints(t_ms)
        if varints is None:
            return None
        width = varints.shape[1]
        short = np.empty((varints.shape[0], 3 + width), np.uint8)
        short[:, :3] = (0x12, 1 + width, 0x10)
        short[:, 3:] = varints
        rows = sample_rows(np.zeros(varints.shape[0]), width)
        rows[:, 12:] = varints
        return cls(t_ms, rows, short.reshape(-1).data)


def _grid_chunks(v: np.ndarray, pieces: Sequence[Piece], grids: Sequence[Grid],
                 counts: np.ndarray) -> tuple[list[list[memoryview]], list[int]] | None:
    """Each piece's ``Sample`` bytes as a few buffer views, and their total size, when the
    pieces' timestamps come from shared grids of one varint length.

    Nothing is compacted: a run of samples with values is a slice of fixed-size rows built
    for this request, a run of +0.0 samples a slice of its grid's ready-made bytes. None
    when the runs are too many for that to pay: compact instead."""
    n = v.shape[0]
    zero = np.ascontiguousarray(v, dtype="<f8").view(np.uint64) == 0
    change = np.flatnonzero(zero[1:] != zero[:-1]) + 1
    if change.shape[0] > n // 16 or not counts.all():
        return None
    width = grids[0].rows.shape[1] - 12
    first = pieces[0]
    if all(g is grids[0] for g in grids) and all(p.lo == first.lo and p.hi == first.hi
                                                 for p in pieces):
        # the usual request: whole series on one time grid: its rows, repeated
        rows = np.empty((n, 12 + width), np.uint8)
        rows.reshape(len(pieces), -1, rows.shape[1])[:] = grids[0].rows[first.lo:first.hi]
    else:
        rows = np.concatenate([g.rows[p.lo:p.hi] for g, p in zip(grids, pieces)])
    rows[:, 3:11] = np.ascontiguousarray(v, dtype="<f8").view(np.uint8).reshape(n, 8)
    record, small = 12 + width, 3 + width
    piece_start = np.cumsum(counts) - counts
    run_start = np.union1d(piece_start, change)
    run_piece = np.searchsorted(piece_start, run_start, "right") - 1
    run_zero = zero[run_start]
    piece_lo = np.fromiter((p.lo for p in pieces), np.int64, len(pieces))
    at_time = piece_lo[run_piece] + run_start - piece_start[run_piece]
    offset = np.where(run_zero, at_time * small, run_start * record).tolist()
    length = (np.diff(run_start, append=n) * np.where(run_zero, small, record)).tolist()
    first_run = np.searchsorted(run_start, piece_start)
    sizes = np.add.reduceat(length, first_run).tolist()
    full = rows.reshape(-1).data
    source = [grids[i].zero_samples if z else full
              for i, z in zip(run_piece.tolist(), run_zero.tolist())]
    views = [buf[o:o + k] for buf, o, k in zip(source, offset, length)]
    bounds = [*first_run.tolist(), len(length)]
    return [views[a:b] for a, b in zip(bounds, bounds[1:])], sizes


def _compacted_chunks(t: np.ndarray, v: np.ndarray,
                      counts: np.ndarray) -> tuple[list[list[memoryview]], list[int]]:
    """As `_grid_chunks`, from one compacted buffer (any timestamps, any runs)."""
    blob, ends = encode_samples(t, v)
    raw = blob.data
    ends = np.concatenate([[0], ends])
    piece_start = np.cumsum(counts) - counts
    lo, hi = ends[piece_start].tolist(), ends[piece_start + counts].tolist()
    return [[raw[a:b]] for a, b in zip(lo, hi)], [b - a for a, b in zip(lo, hi)]


class SeriesEncoder:
    """Encodes batches of :class:`Piece` of a fixed list of series; caches label bytes."""

    def __init__(self, series: Sequence[Series]) -> None:
        self.series = series
        self._labels: dict[int, bytes] = {}
        # Series that share one timestamp array (a generated or shifted incident's do):
        # it is encoded once, as a Grid. Keyed by id; the Grid keeps the array alive.
        uses = Counter(id(s.t_ms) for s in series)
        self._shared = {k for k, n in uses.items() if n > 1}
        self._grid_cache: dict[int, Grid | None] = {}

    def _grids(self, pieces: Sequence[Piece]) -> list[Grid] | None:
        """The pieces' shared timestamp grids, when all have one, of one varint length."""
        out = []
        for p in pieces:
            t = self.series[p.series].t_ms
            if id(t) not in self._shared:
                return None
            if id(t) not in self._grid_cache:
                self._grid_cache[id(t)] = Grid.of(t)
            grid = self._grid_cache[id(t)]
            if grid is None:
                return None
            out.append(grid)
        if len({g.rows.shape[1] for g in out}) != 1:
            return None
        return out

    def labels(self, index: int) -> bytes:
        cached = self._labels.get(index)
        if cached is None:
            cached = self._labels[index] = encode_labels(self.series[index].labels)
        return cached

    def write_request(self, pieces: Sequence[Piece]) -> bytes:
        """Uncompressed ``WriteRequest`` protobuf holding ``pieces``."""
        if not pieces:
            return b""
        v = np.concatenate([self.series[p.series].values[p.lo:p.hi] for p in pieces])
        counts = np.fromiter((p.samples for p in pieces), np.int64, len(pieces))
        grids = self._grids(pieces)
        done = _grid_chunks(v, pieces, grids, counts) if grids else None
        if done is None:
            t = np.concatenate([self.series[p.series].t_ms[p.lo:p.hi] for p in pieces])
            done = _compacted_chunks(t, v, counts)
        chunks, sizes = done
        ex_raw, ex_ends = self._exemplars(pieces)
        ex = memoryview(ex_raw)
        out: list[bytes | memoryview] = []
        ex_first = 0
        # Each TimeSeries as its parts (tag and size, labels, samples, exemplars), joined
        # once at the end: no copy per series beyond the final one.
        for p, samples, size in zip(pieces, chunks, sizes):
            labels = self.labels(p.series)
            size += len(labels)
            if p.exemplars:
                ex_last = ex_first + p.exemplars
                a = int(ex_ends[ex_first - 1]) if ex_first else 0
                b = int(ex_ends[ex_last - 1])
                size += b - a
                out += (b"\x0a", varint(size), labels, *samples, ex[a:b])
                ex_first = ex_last
            else:
                out += (b"\x0a", varint(size), labels, *samples)
        return b"".join(out)

    def _exemplars(self, pieces: Sequence[Piece]) -> tuple[bytes, np.ndarray]:
        """The exemplars of every piece, encoded in one go."""
        with_ex = [p for p in pieces if p.exemplars]
        if not with_ex:
            return b"", np.zeros(0, np.int64)
        ex = [self.series[p.series].exemplars for p in with_ex]
        cut = [(e, p.ex_lo, p.ex_hi) for e, p in zip(ex, with_ex)]
        raw, row_len = exemplar_rows(
            np.concatenate([e.value[a:b] for e, a, b in cut]),
            np.concatenate([e.t_ms[a:b] for e, a, b in cut]),
            np.concatenate([e.span_id[a:b] for e, a, b in cut]),
            np.concatenate([e.trace_id[a:b] for e, a, b in cut]))
        return raw, np.cumsum(row_len)


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
    return list(iter_pieces(series, max_samples))


def iter_pieces(series: Sequence[Series], max_samples: int) -> Iterator[Piece]:
    """`plan_pieces`, one piece at a time."""
    for i, s in enumerate(series):
        n = len(s)
        ex_t = s.exemplars.t_ms
        if 0 < n <= max_samples:  # the usual case: the whole series in one piece
            yield Piece(i, 0, n, 0, len(ex_t))
            continue
        for lo in range(0, n, max_samples):
            hi = min(lo + max_samples, n)
            last_piece = hi == n
            ex_lo = int(np.searchsorted(ex_t, s.t_ms[lo], "left")) if lo else 0
            ex_hi = len(ex_t) if last_piece else int(np.searchsorted(ex_t, s.t_ms[hi], "left"))
            yield Piece(i, lo, hi, ex_lo, ex_hi)
