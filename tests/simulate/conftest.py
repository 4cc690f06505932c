"""The service on a real port (the simulator talks to it as to any deployment), run in a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from energy_ingest.app import create_app
from tests.conftest import make_settings


@contextlib.contextmanager
def serve(database_url: str, **settings: Any) -> Iterator[str]:
    """The service with `settings` on a free loopback port, until ready (MQTT connected when configured)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    app = create_app(make_settings(database_url, port=port, **settings), database_url)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        # Ready includes the MQTT subscription: a message published before it would find no subscriber.
        while (ready := httpx.get(f"{url}/ready")).status_code != 200:
            assert time.monotonic() < deadline, f"/ready stayed {ready.status_code}: {ready.text}"
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def server_url(database_url: str, db: psycopg.Connection[tuple[Any, ...]]) -> Iterator[str]:
    with serve(database_url) as url:
        yield url
