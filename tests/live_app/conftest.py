from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from live_app.app import create_app
from live_app.settings import Settings


def client_for(settings: Settings, host: str = "127.0.0.1") -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False, client=(host, 50000),
                      base_url=f"http://{host}")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'payments.db'}", pool_timeout_s=0.3,
                    error_ratio=1.0, incident_token="let-me-in")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with client_for(settings) as c:
        yield c


@contextmanager
def serving(settings: Settings, log_level: str = "warning") -> Iterator[str]:
    """live_app served by a real uvicorn on a free loopback port, in a thread."""
    import threading
    import time as _time

    import uvicorn

    from tests.integration.prometheus_server import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level=log_level, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = _time.monotonic() + 20
    while not server.started:
        if _time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        _time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    with serving(settings) as url:
        yield url
