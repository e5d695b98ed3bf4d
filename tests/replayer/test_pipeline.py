"""`one_ahead`: results in order, paired with their items, errors raised where they occur."""

from __future__ import annotations

import threading

import pytest

from replayer.pipeline import one_ahead


def test_pairs_come_back_in_order_and_the_next_is_encoded_meanwhile() -> None:
    encoded_in: list[str] = []

    def encode(x: int) -> int:
        encoded_in.append(threading.current_thread().name)
        return x * x

    out = []
    for item, body in one_ahead(range(6), encode):
        out.append((item, body))
    assert out == [(i, i * i) for i in range(6)]
    assert all(name != threading.current_thread().name for name in encoded_in)
    assert list(one_ahead([], encode)) == []


def test_an_encoding_error_is_raised_at_its_item() -> None:
    def encode(x: int) -> int:
        if x == 3:
            raise ValueError("bad item 3")
        return x

    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for item, _ in one_ahead(range(6), encode):
            got.append(item)
    assert got == [0, 1, 2]
