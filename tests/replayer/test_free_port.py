"""`free_port` never hands the same port out twice in one process: a server given several
ports binds them only once all are chosen (Tempo takes four), and the kernel may offer a
port again while none is bound (Tempo's OTLP receiver was once given its HTTP port)."""

from __future__ import annotations

import socket

from replayer.stack import free_port


def test_ports_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # nothing listens there
