"""A loopback HTTP proxy in front of a real server that injects faults on cue: for the
fault tests (the replayer must survive a server's outage, a reset, a slow answer)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

# (method, path, proxy) -> None to forward, or a fault: "drop" (close without answering)
# or "swallow" (answer 204, store nothing), or ("delay", seconds) (answer late)
Rule = Callable[[str, str, "FaultProxy"], object]


class FaultProxy:
    def __init__(self, upstream: str, rule: Rule) -> None:
        self.upstream, self.rule = upstream.rstrip("/"), rule
        self.lock = threading.Lock()
        self.started: float | None = None  # when the first fault was injected
        self.faults = 0
        self.forwarded: list[tuple[str, str, int]] = []

    def outage(self, path: str, seconds: float, after: int = 0) -> Rule:
        """A rule: from the request to ``path`` that follows ``after`` others to it on, drop
        every request (any path) for ``seconds`` — a server restarting, or gone."""
        seen = [0]

        def rule(method: str, got: str, proxy: FaultProxy) -> object:
            with proxy.lock:
                if proxy.started is None and got.startswith(path):
                    seen[0] += 1
                    if seen[0] > after:
                        proxy.started = time.monotonic()
                if proxy.started is not None and time.monotonic() - proxy.started < seconds:
                    proxy.faults += 1
                    return "drop"
            return None
        return rule


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    session = requests.Session()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fault = proxy.rule(self.command, self.path, proxy)
            if fault == "drop":
                self.close_connection = True
                self.connection.close()  # no answer: the client sees the connection go
                return
            if fault == "swallow":  # says it stored what it never did
                with proxy.lock:
                    proxy.faults += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if isinstance(fault, tuple) and fault[0] == "delay":
                time.sleep(fault[1])  # a slow server: then the real answer
            skip = {"host", "content-length", "connection", "transfer-encoding"}
            r = session.request(self.command, proxy.upstream + self.path, data=body,
                                headers={k: v for k, v in self.headers.items()
                                         if k.lower() not in skip}, timeout=60)
            with proxy.lock:
                proxy.forwarded.append((self.command, self.path, r.status_code))
            self.send_response(r.status_code)
            for k, v in r.headers.items():
                if k.lower() not in skip | {"content-encoding"}:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

        do_GET = do_POST = _any  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def fault_proxy(upstream: str, rule: Rule | None = None,
                make_rule: Callable[[FaultProxy], Rule] | None = None) -> Iterator[tuple[str,
                                                                                    FaultProxy]]:
    proxy = FaultProxy(upstream, rule or (lambda m, p, x: None))
    if make_rule is not None:
        proxy.rule = make_rule(proxy)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", proxy
    finally:
        server.shutdown()
        server.server_close()
