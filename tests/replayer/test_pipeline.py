"""`send_lanes` with one lane (what `one_ahead` did before the lanes replaced it): bodies
go out in order, paired with their batches, sent from a thread of their own while the
next is encoded, and an encoding error is raised at its item."""

from __future__ import annotations

import threading

import pytest

from replayer.pipeline import send_lanes


def test_pairs_come_back_in_order_and_are_sent_while_the_next_is_encoded() -> None:
    sent_in: list[str] = []
    out: list[tuple[int, int]] = []

    def send(item: int, body: int) -> None:
        sent_in.append(threading.current_thread().name)
        out.append((item, body))

    send_lanes(((0, i) for i in range(6)), 1, lambda x: x * x, send)
    assert out == [(i, i * i) for i in range(6)]
    assert all(name != threading.current_thread().name for name in sent_in)
    out.clear()
    send_lanes(iter(()), 1, lambda x: x, send)
    assert out == []


def test_an_encoding_error_is_raised_at_its_item() -> None:
    def encode(x: int) -> int:
        if x == 3:
            raise ValueError("bad item 3")
        return x

    got: list[int] = []
    with pytest.raises(ValueError, match="bad item 3"):
        send_lanes(((0, i) for i in range(6)), 1, encode, lambda item, body: got.append(item))
    assert got == [0, 1, 2]
