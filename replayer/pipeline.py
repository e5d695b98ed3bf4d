"""Encode the next request while the current ones are on the wire, in one lane or
several."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def send_lanes(batches: Iterable[tuple[int, T]], lanes: int,
               encode: Callable[[T], R], send: Callable[..., None],
               after_each: Callable[[], None] | None = None,
               on_interrupt: Callable[[], None] | None = None,
               halted: threading.Event | None = None) -> None:
    """One thread encodes every (lane, batch) in the order given; one thread per lane posts
    that lane's bodies in order, while the next ones are encoded.

    One encoder rather than one per lane: encoding is Python and numpy under the GIL, and
    several threads taking turns at it cost more CPU than they win (the server shares the
    machine). A sender that fails stops the encoder, and its error is raised here. On
    Ctrl-C, ``on_interrupt`` runs (it cancels the transport's waits), the senders finish
    the request in hand and send nothing more, and KeyboardInterrupt is raised here. So
    it is when ``halted`` is set: Ctrl-C reaches only the main thread, and a signal being
    sent beside another in a thread of its own is stopped this way."""
    queues: list[queue.Queue[tuple[T, R] | None]] = [
        queue.Queue(maxsize=2) for _ in range(lanes)]
    failed = threading.Event()
    stop = threading.Event()

    def sender(q: queue.Queue[tuple[T, R] | None]) -> None:
        try:
            while (item := q.get()) is not None:
                if stop.is_set():
                    continue  # Ctrl-C: drained, not sent (the caller counts it)
                send(item[0], body=item[1])
                if after_each:
                    after_each()
        except BaseException:
            failed.set()
            while q.get() is not None:  # unblock the encoder; its batches are not sent
                pass
            raise

    def interrupted() -> None:
        stop.set()
        if on_interrupt:
            on_interrupt()

    ended: set[int] = set()

    def end_all() -> None:
        """Tell every sender there is no more. A Ctrl-C can land in the middle of this;
        then it is done again, for the senders not told yet: a sender never told would
        wait for ever, and so would this function's caller, joining it."""
        for i, q in enumerate(queues):
            if i not in ended:
                q.put(None)  # a full queue drains: the sender sends, or skips once stopped
                ended.add(i)

    with ThreadPoolExecutor(max_workers=lanes) as pool:
        futures = [pool.submit(sender, q) for q in queues]
        try:
            try:
                for lane, batch in batches:
                    if halted is not None and halted.is_set():
                        raise KeyboardInterrupt
                    if failed.is_set() or stop.is_set():
                        break
                    queues[lane].put((batch, encode(batch)))
                if halted is not None and halted.is_set():
                    raise KeyboardInterrupt
            except KeyboardInterrupt:
                interrupted()
                raise
            finally:
                end_all()
            for fut in futures:
                fut.result()
        except KeyboardInterrupt:
            interrupted()
            end_all()
            for fut in futures:  # the requests in hand end; nothing more is sent
                if not fut.cancelled():
                    fut.exception()  # a sender's own failure is in the report already
            raise
