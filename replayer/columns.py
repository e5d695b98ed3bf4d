"""Entries that each carry a list of (name, value) pairs (Loki's structured metadata, a
span's attributes), encoded a column at a time and joined entry by entry as latin-1 text.

Instrumentation writes the same names in the same order on nearly every entry of a
stream or a span table, and most values never change: payment-service's log lines carry
fifteen pairs, ten of them the same on every line. Entries with the same number of pairs
are a group (a database span with a statement and one without); when a group's entries
all carry the same names in the same order, each column is encoded once (a pair that is
the same everywhere is one constant text), constants next to each other become one part,
and each entry's text is a join of a handful of parts, in C. A group whose names differ
goes an entry at a time.

Text here is latin-1: a code point per byte, so a str's length is its size on the wire
and a whole request is encoded to bytes once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np

Pair = tuple[str, Any]
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
class Encoded:
    """Every entry's pairs as one latin-1 text, its size, and its weight (what a caller
    counts besides size, e.g. Loki's rate limit)."""

    texts: list[str]
    size: np.ndarray
    weight: np.ndarray


# (a column's pairs, the same pair in every entry?) -> (parts, sizes, weights)
ColumnCoder = Callable[[list[Pair], bool], tuple[list[Part], Sizes, Sizes]]
# entries of any shape -> (their texts, their weights)
EachCoder = Callable[[Sequence[Entry]], tuple[list[str], np.ndarray]]


def by_columns(entries: Sequence[Entry], column: ColumnCoder, each: EachCoder) -> Encoded:
    """``entries`` encoded a group at a time: the entries with the same number of pairs
    are a group, encoded by columns when they carry the same names in the same order (else
    by ``each``, an entry at a time)."""
    n = len(entries)
    if not any(entries):
        zero = np.zeros(n, np.int64)
        return Encoded([""] * n, zero, zero)
    counts = np.fromiter(map(len, entries), np.int64, n)
    shapes = np.unique(counts).tolist()
    if len(shapes) == 1:
        return _group(entries, shapes[0], column, each)
    texts = np.empty(n, object)
    size, weight = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for k in shapes:
        rows = np.flatnonzero(counts == k)
        got = _group(itemgetter(*rows.tolist())(entries) if rows.shape[0] > 1
                     else (entries[int(rows[0])],), k, column, each)
        texts[rows] = np.fromiter(got.texts, object, rows.shape[0])
        size[rows], weight[rows] = got.size, got.weight
    return Encoded(texts.tolist(), size, weight)


def _group(group: Sequence[Entry], k: int, column: ColumnCoder, each: EachCoder) -> Encoded:
    """Entries of ``k`` pairs each."""
    m = len(group)
    if k == 0:
        zero = np.zeros(m, np.int64)
        return Encoded([""] * m, zero, zero)
    flat = list(chain.from_iterable(group))
    parts: list[Part] = []
    size, weight = np.zeros(m, np.int64), np.zeros(m, np.int64)
    for j in range(k):
        pairs = flat[j::k]
        first = pairs[0]
        same = pairs.count(first) == m  # mostly the very same object: a pointer compare
        if not same and list(map(_FIRST, pairs)).count(first[0]) != m:
            texts, weights = each(group)  # the names differ: an entry at a time
            return Encoded(texts, np.fromiter(map(len, texts), np.int64, m), weights)
        got, s, w = column(pairs, same)
        for p in got:
            append(parts, p)
        size += s
        weight += w
    if len(parts) == 1 and isinstance(parts[0], str):
        return Encoded([parts[0]] * m, size, weight)
    texts = list(map("".join, zip(*[repeat(p, m) if isinstance(p, str) else p
                                     for p in parts])))
    return Encoded(texts, size, weight)


def interleave(columns: Sequence[Iterable[str]]) -> str:
    """Entry 0 of every column, then entry 1 of every column, ... as one text."""
    return "".join(chain.from_iterable(zip(*columns)))
