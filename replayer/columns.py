"""Entries that each carry a list of (name, value) pairs (Loki's structured metadata, a
span's attributes), encoded a column at a time and joined entry by entry as latin-1 text.

Instrumentation writes the same names in the same order on nearly every entry of a
stream or a span table, and most values never change: payment-service's log lines carry
fifteen pairs, ten of them the same on every line. For the entries with the most common
number of pairs, when they all carry the same names in the same order, each column is
encoded once (a pair that is the same everywhere is one constant text), constants next to
each other become one part, and a request joins a handful of parts an entry in C. The
other entries (a log line without trace context, a span with an extra attribute) carry
their whole encoding as one text.

Text here is latin-1: a code point per byte, so a str's length is its size on the wire
and a whole request is encoded to bytes once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter

import numpy as np

Pair = tuple[str, object]
Entry = tuple[Pair, ...]
Part = str | Sequence[str]  # the same text for every entry, or one text an entry
Sizes = np.ndarray | int  # one an entry, or the same for every entry

_FIRST = itemgetter(0)


def latin1(texts: Sequence[str]) -> Sequence[str]:
    """``texts`` with each UTF-8 byte as one code point (as they are, when ASCII)."""
    if "".join(texts).isascii():
        return texts
    return [x.encode().decode("latin-1") for x in texts]


def append(parts: list[Part], piece: Part) -> None:
    """Add a part; a text the same for every entry joins a constant before it."""
    if isinstance(piece, str) and parts and isinstance(parts[-1], str):
        parts[-1] += piece
    elif not (isinstance(piece, str) and not piece):
        parts.append(piece)


@dataclass(frozen=True)
class Columns:
    """``parts`` for the entries at ``rows`` (every entry when None); each other entry's
    whole text in ``other_texts`` (at ``others``, ascending); every entry's encoded size,
    and its weight (what a caller counts besides size, e.g. Loki's rate limit)."""

    parts: list[Part]
    rows: np.ndarray | None
    others: np.ndarray
    other_texts: list[str]
    size: np.ndarray
    weight: np.ndarray


# (a column's pairs, the same pair in every entry?) -> (parts, sizes, weights)
ColumnCoder = Callable[[list[Pair], bool], tuple[list[Part], Sizes, Sizes]]
# entries of any shape -> (their texts, their weights)
EachCoder = Callable[[Sequence[Entry]], tuple[list[str], np.ndarray]]


def by_columns(entries: Sequence[Entry], column: ColumnCoder, each: EachCoder) -> Columns:
    n = len(entries)
    zero = np.zeros(n, np.int64)
    none = np.zeros(0, np.int64)
    if not any(entries):
        return Columns([], None, none, [], zero, zero)
    counts = np.fromiter(map(len, entries), np.int64, n)
    k = int(np.bincount(counts).argmax())
    rows = np.flatnonzero(counts == k)
    m = rows.shape[0]
    group = entries if m == n else (itemgetter(*rows.tolist())(entries) if m > 1
                                    else (entries[int(rows[0])],))
    flat = list(chain.from_iterable(group))
    parts: list[Part] = []
    size, weight = np.zeros(m, np.int64), np.zeros(m, np.int64)
    for j in range(k):
        pairs = flat[j::k]
        first = pairs[0]
        same = pairs.count(first) == m  # mostly the very same object: a pointer compare
        if not same and list(map(_FIRST, pairs)).count(first[0]) != m:
            texts, weights = each(entries)  # the names differ: one text an entry
            return Columns([], np.zeros(0, np.int64), np.arange(n), texts,
                           np.fromiter(map(len, texts), np.int64, n), weights)
        got, s, w = column(pairs, same)
        for p in got:
            append(parts, p)
        size += s
        weight += w
    if m == n:
        return Columns(parts, None, none, [], size, weight)
    others = np.flatnonzero(counts != k)
    other_texts, other_weights = each([entries[i] for i in others.tolist()])
    all_size, all_weight = zero.copy(), zero.copy()
    all_size[rows], all_weight[rows] = size, weight
    all_size[others] = np.fromiter(map(len, other_texts), np.int64, len(other_texts))
    all_weight[others] = other_weights
    return Columns(parts, rows, others, other_texts, all_size, all_weight)


def join(cols: Columns, lo: int, hi: int, before: Sequence[Part],
         after: Sequence[Part] = ()) -> str:
    """Entries ``lo:hi`` as one text: each entry's ``before`` parts, its columns, then its
    ``after`` parts. ``before`` and ``after`` hold texts for these entries only (index 0
    is entry ``lo``) or one text for all of them."""
    if cols.rows is None:
        return _run(cols, lo, lo, hi, lo, before, after)
    pieces: list[str] = []
    first, last = np.searchsorted(cols.others, [lo, hi]).tolist()
    at = lo
    for o, text in zip(cols.others[first:last].tolist(), cols.other_texts[first:last]):
        if o > at:
            pieces.append(_run(cols, lo, at, o, at - first, before, after))
        pieces += [p if isinstance(p, str) else p[o - lo] for p in before]
        pieces.append(text)
        pieces += [p if isinstance(p, str) else p[o - lo] for p in after]
        at, first = o + 1, first + 1
    if at < hi:
        pieces.append(_run(cols, lo, at, hi, at - first, before, after))
    return "".join(pieces)


def _run(cols: Columns, lo: int, a: int, b: int, g: int, before: Sequence[Part],
         after: Sequence[Part]) -> str:
    """Entries ``a:b``, all of the columns' shape (their rows in the columns start at
    ``g``); ``before`` and ``after`` are indexed from ``lo``."""
    n = b - a

    def local(p: Part) -> Iterable[str]:
        return repeat(p, n) if isinstance(p, str) else p[a - lo:b - lo]

    columns = [local(p) for p in before]
    columns += [repeat(p, n) if isinstance(p, str) else p[g:g + n] for p in cols.parts]
    columns += [local(p) for p in after]
    return "".join(chain.from_iterable(zip(*columns)))
