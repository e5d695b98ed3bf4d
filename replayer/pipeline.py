"""Encode the next request while the current one is on the wire."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def one_ahead(items: Iterable[T], encode: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """``(item, encode(item))`` in order, with the next item's encoding done by one helper
    thread while the caller sends this one (numpy and compression release the GIL, and
    the server works on the request meanwhile). At most one encoded item waits."""
    with ThreadPoolExecutor(max_workers=1) as helper:
        pending: tuple[T, Future[R]] | None = None
        for item in items:
            nxt = (item, helper.submit(encode, item))
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = nxt
        if pending is not None:
            yield pending[0], pending[1].result()
