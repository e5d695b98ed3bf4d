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


def test_ctrl_c_while_the_senders_are_told_to_end_still_ends_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C landing while the lanes are being told there is no more (the end marker put
    into the second lane's queue): every sender still ends, and KeyboardInterrupt comes out.
    Before, that lane was never told, and the load waited for it for ever (a spanned load,
    which runs the lanes once a slice, met it in CI)."""
    import queue as queue_module

    real_put = queue_module.Queue.put
    markers = {"n": 0}

    def put(self, item, block=True, timeout=None):  # type: ignore[no-untyped-def]
        if item is None:
            markers["n"] += 1
            if markers["n"] == 2:  # the signal lands here, before the marker went in
                raise KeyboardInterrupt
        return real_put(self, item, block, timeout)

    monkeypatch.setattr(queue_module.Queue, "put", put)
    sent: list[int] = []
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            send_lanes(((i % 3, i) for i in range(9)), 3, lambda x: x,
                       lambda item, body: sent.append(item))
        except KeyboardInterrupt:
            outcome["raised"] = True

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=20)  # bounded: a sender left waiting hangs here instead of for ever
    assert not t.is_alive(), "a lane was never told to end"
    assert outcome == {"raised": True}
    # each at most once; what was still queued when the signal came is not sent
    assert len(set(sent)) == len(sent) and set(sent) <= set(range(9))
