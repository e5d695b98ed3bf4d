"""Vectorized building blocks for the hand-written protobuf encoders.

Messages are assembled for many items at once: small numeric parts as byte matrices
(packed left with a mask), variable-length parts (log lines, metadata) copied from one big
buffer with gather indices. No Python work per item beyond preparing the strings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .remote_write.encode import varint_matrix

Piece = tuple[np.ndarray, np.ndarray]  # (n, width) uint8 matrix, (n,) used length per row


def const(n: int, value: bytes, present: np.ndarray | None = None) -> Piece:
    m = np.broadcast_to(np.frombuffer(value, np.uint8), (n, len(value)))  # no copy
    if present is None or present.all():
        return m, np.full(n, len(value), np.int64)
    flag = present.astype(np.uint8)
    return m * flag[:, None], flag.astype(np.int64) * len(value)


def varint_piece(values: np.ndarray, present: np.ndarray | None = None) -> Piece:
    """A varint per row; rows not ``present`` get length 0 and all-zero bytes."""
    values = np.asarray(values, np.int64)
    m, length = (_varints32(values) if values.size and 0 <= values.min() and
                 values.max() < 1 << 32 else varint_matrix(values))
    if present is None or present.all():
        return m, length
    return m * present[:, None].astype(np.uint8), np.where(present, length, 0)


def _varints32(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`varint_matrix` for values in [0, 2**32), in 32-bit arithmetic (lengths, sizes and
    nanoseconds are; so are epoch seconds until 2106): about twice as fast."""
    u = values.astype(np.uint32)
    length = 1 + ((u >= 1 << 7).view(np.uint8) + (u >= 1 << 14).view(np.uint8)
                  + (u >= 1 << 21).view(np.uint8) + (u >= 1 << 28).view(np.uint8))
    width = int(length.max())
    m = np.empty((u.shape[0], width), np.uint8)
    for k in range(width):
        byte = (u >> np.uint32(7 * k)) & np.uint32(0x7F)
        if k < width - 1:
            byte |= (length > k + 1).view(np.uint8) << np.uint8(7)
        m[:, k] = byte
    return m, length.astype(np.int64)


def pack(pieces: Sequence[Piece]) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise concatenation of the used bytes of each piece.

    Returns the bytes of all rows back to back and each row's length."""
    matrix = np.concatenate([m for m, _ in pieces], axis=1)
    keep = np.concatenate([np.arange(m.shape[1])[None, :] < length[:, None]
                           for m, length in pieces], axis=1)
    return matrix[keep], np.sum([length for _, length in pieces], axis=0)


def rows(pieces: Sequence[Piece]) -> np.ndarray:
    """The pieces of each row back to back, in an (n, width) matrix padded with zeros.

    Each piece writes its whole width at the row's running offset: the zero bytes past a
    short varint are overwritten by the next piece or end up in the padding. Cheaper than
    `pack` (no mask over every byte) when the rows are wanted one by one."""
    n = pieces[0][0].shape[0]
    width = sum(m.shape[1] for m, _ in pieces)
    out = np.zeros(n * width, np.uint8)
    at = np.arange(n, dtype=np.int64) * width
    for m, length in pieces:
        if m.shape[1] == 1:
            out[at] = m[:, 0]
        else:
            out[at[:, None] + np.arange(m.shape[1])] = m
        at = at + length
    return out.reshape(n, width)


def row_texts(matrix: np.ndarray) -> list[str]:
    """Each row of a ``rows`` matrix as a str of code points 0-255 (bytes read as latin-1),
    with the zero padding stripped, made in C. A row whose own last byte is 0x00 loses it:
    callers keep such rows out."""
    width = matrix.shape[1]
    return matrix.astype(np.uint32).view(f"U{width}").ravel().tolist()


def segments(n: int, parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Interleave, item by item, variable-length parts given as (buffer, lengths) each
    holding its items back to back: item 0's parts, then item 1's, ..."""
    lengths = np.stack([length for _, length in parts])  # (parts, n)
    per_item = lengths.sum(axis=0)
    out = np.empty(int(per_item.sum()), np.uint8)
    item_start = np.cumsum(per_item) - per_item
    offset_in_item = np.cumsum(lengths, axis=0) - lengths
    for p, (buf, length) in enumerate(parts):
        total = int(length.sum())
        if total == 0:
            continue
        src_start = np.cumsum(length) - length
        shift = (item_start + offset_in_item[p] - src_start).astype(np.int64)
        # byte j of the buffer lands at j + (where its item's part starts - where it started)
        out[np.arange(total, dtype=np.int64) + np.repeat(shift, length)] = buf
    return out.tobytes()


def utf8(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All ``texts`` encoded back to back, and each one's byte length."""
    joined = "".join(texts)
    if joined.isascii():
        lengths = np.fromiter(map(len, texts), np.int64, len(texts))
        return np.frombuffer(joined.encode("ascii"), np.uint8), lengths
    encoded = [t.encode() for t in texts]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    return np.frombuffer(b"".join(encoded), np.uint8), lengths


def varint_len(values: np.ndarray) -> np.ndarray:
    return varint_matrix(np.asarray(values, np.int64))[1]
