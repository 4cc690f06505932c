"""Bounded resources of a running `energy-ingest serve`, as clients see them: slow or idle connections are
cut off, connections and request bodies beyond the worker's caps are refused, and memory stays bounded.

Raw sockets, because an HTTP client library would neither trickle bytes nor hold a body one byte short.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, fields
from typing import Any

import httpx
import psutil
import pytest

from energy_ingest.config import Settings
from energy_ingest_bench.scratch import create_database, drop_database
from tests.server import admin_key
from tests.support import hour_ago, meter

HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 4
KEEP_ALIVE_TIMEOUT_S = 1
BODY_LIMIT = 8 * 1024 * 1024
INFLIGHT_BODY_BYTES = 2 * BODY_LIMIT  # room for two bodies at the limit
MAX_CONNECTIONS = 60
MiB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[str]
    key: str = ""  # the admin key of its first start

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def rss(self) -> int:
        """Resident memory of the serving processes (with one worker, uvicorn serves in the main process)."""
        main = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [main, *main.children(recursive=True)])

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server_url = os.environ.get("TEST_DATABASE_URL") or request.getfixturevalue("database_url")
    url, name = create_database(server_url, "energy_ingest_resources")
    settings_names = {f.name.upper() for f in fields(Settings)}
    data_dir = tmp_path_factory.mktemp("resources-data")  # where the first start keeps its admin key
    output = data_dir / "serve.log"  # a file, not a pipe: nothing reads it while serve runs
    env = {k: v for k, v in os.environ.items() if k not in settings_names} | {
        "DATABASE_URL": url,
        "DATA_DIR": str(data_dir),
        "HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_TIMEOUT_S),
        "BODY_LIMIT_BYTES": str(BODY_LIMIT),
        "INFLIGHT_BODY_BYTES": str(INFLIGHT_BODY_BYTES),
        "MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "LOG_LEVEL": "warning",
    }
    port = _free_port()
    command = [sys.executable, "-m", "energy_ingest.cli", "serve", "--workers", "1", "--port", str(port)]
    with output.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    running = Server(port, proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, output.read_text()
            try:
                if httpx.get(running.base + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready:\n" + output.read_text()
            time.sleep(0.2)
        running.key = admin_key(data_dir, output.read_text())
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        drop_database(server_url, name)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers["content-type"] == "application/problem+json", self.headers
        problem: dict[str, Any] = json.loads(self.body)
        assert problem["status"] == self.status
        return problem


def _recv(sock: socket.socket, deadline: float) -> bytes:
    """Next bytes from the server, b"" once it has hung up."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        return b""
    except TimeoutError:
        raise AssertionError("the server neither answered nor hung up in time") from None


def _answer(sock: socket.socket, within_s: float) -> Answer | None:
    """The response on `sock`, or None if the server hung up without one."""
    deadline = time.monotonic() + within_s
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock, deadline)
        if not chunk:
            assert not data, f"incomplete response: {data!r}"
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = _recv(sock, deadline)
        assert chunk, "the server hung up inside its response"
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body)


def _hung_up(sock: socket.socket, within_s: float) -> bool:
    """True once the server closes the connection (anything it sends first is read and dropped)."""
    deadline = time.monotonic() + within_s
    try:
        while _recv(sock, deadline):
            pass
    except AssertionError:
        return False
    return True


def _trickle(sock: socket.socket, data: bytes, every_s: float, within_s: float) -> bool:
    """Send `data` a byte every `every_s`; True as soon as the server answers or hangs up."""
    deadline = time.monotonic() + within_s
    for byte in data:
        readable, _, _ = select.select([sock], [], [], every_s)
        if readable:
            return True
        if time.monotonic() > deadline:
            return False
        try:
            sock.send(bytes([byte]))
        except OSError:
            return True
    return False


def _ingest_head(server: Server | None, length: int) -> bytes:
    """A request head with the admin key (none without a server): the body is read only after the key is checked."""
    auth = b"Authorization: Bearer %s\r\n" % server.key.encode() if server else b""
    return (
        b"POST /v1/ingest HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"%sContent-Length: %d\r\n\r\n" % (auth, length)
    )


def test_connections_that_send_nothing_are_closed(server: Server) -> None:
    with closing(server.connect()) as fresh:
        assert _hung_up(fresh, KEEP_ALIVE_TIMEOUT_S + 4), "a connection that never sent a byte stayed open"
    with closing(server.connect()) as used:
        used.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = _answer(used, 5)
        assert answer is not None and answer.status == 200
        assert _hung_up(used, KEEP_ALIVE_TIMEOUT_S + 4), "an idle keep-alive connection stayed open"


def test_headers_sent_a_byte_at_a_time_are_cut_off(server: Server) -> None:
    with closing(server.connect()) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        # Every byte resets the idle timer; only the header timeout can end this.
        assert _trickle(sock, b"a" * 200, 0.25, HEADER_TIMEOUT_S + 5), "slow headers were waited for"
        answer = _answer(sock, 5)
        if answer is not None:
            assert answer.status == 408
            assert "headers" in answer.problem()["detail"]
        assert _hung_up(sock, 5)


def test_a_body_sent_a_byte_at_a_time_is_answered_408(server: Server) -> None:
    with closing(server.connect()) as sock:
        sock.sendall(_ingest_head(server, 200))
        assert _trickle(sock, b" " * 199, 0.25, BODY_TIMEOUT_S + 5), "a slow body was waited for"
        answer = _answer(sock, 5)
        assert answer is not None, "the slow body was cut off without an answer"
        assert answer.status == 408
        assert "body" in answer.problem()["detail"]
        assert _hung_up(sock, 5)


def test_content_length_over_the_limit_is_refused_before_the_body(server: Server) -> None:
    with closing(server.connect()) as sock:
        sock.sendall(_ingest_head(server, BODY_LIMIT + 1))  # and not a byte of the body
        answer = _answer(sock, 5)
        assert answer is not None
        assert answer.status == 413
        assert str(BODY_LIMIT) in answer.problem()["detail"]
        assert answer.headers["connection"] == "close"
        assert _hung_up(sock, 5)


def test_a_body_without_a_key_is_answered_401_before_it_is_sent(server: Server) -> None:
    with closing(server.connect()) as sock:
        sock.sendall(_ingest_head(None, BODY_LIMIT))  # and not a byte of the body
        answer = _answer(sock, 5)
        assert answer is not None
        assert answer.status == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in answer.problem()["detail"]


def test_oversized_headers_are_refused(server: Server) -> None:
    with closing(server.connect()) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        with contextlib.suppress(OSError):  # the server may hang up while this is still being sent
            sock.sendall(b"a" * (256 * 1024))
        answer = _answer(sock, 5)
        assert answer is not None and answer.status == 431
        answer.problem()


def test_bodies_beyond_the_budget_are_refused_and_memory_stays_bounded(server: Server) -> None:
    t = hour_ago()
    assert httpx.post(server.base + "/v1/ingest", json=meter("RES-1", t), headers=server.auth).status_code == 201
    before = server.rss()
    clients, admitted = 40, INFLIGHT_BODY_BYTES // BODY_LIMIT
    with ExitStack() as stack:
        socks = [stack.enter_context(closing(server.connect())) for _ in range(clients)]
        for sock in socks:
            sock.sendall(_ingest_head(server, BODY_LIMIT))
        # Those the budget cannot cover are answered at once, before sending their body.
        refused: dict[socket.socket, Answer] = {}
        deadline = time.monotonic() + 5
        while len(refused) < clients - admitted and time.monotonic() < deadline:
            readable, _, _ = select.select([s for s in socks if s not in refused], [], [], 0.2)
            for sock in readable:
                answer = _answer(sock, 5)
                assert answer is not None, "a connection was dropped without an answer"
                refused[sock] = answer
        assert len(refused) == clients - admitted, f"{len(refused)} of {clients} refused"
        for answer in refused.values():
            assert answer.status == 429
            assert answer.headers["retry-after"].isdigit()
            answer.problem()
        held = [s for s in socks if s not in refused]
        assert not select.select(held, [], [], 0.3)[0], "an admitted body was answered before it was sent"

        # Every client sends its body but the last byte, the refused ones too (they were hung up on).
        body = b" " * (BODY_LIMIT - 1)
        for sock in socks:
            sock.settimeout(5)
            try:
                sock.sendall(body)
            except OSError:
                assert sock in refused
        peak = 0
        for _ in range(5):  # the server may still be reading what was sent
            time.sleep(0.1)
            peak = max(peak, server.rss())
        offered = clients * BODY_LIMIT
        # Bodies held plus their reading buffers; without the budget this grows by `offered` (320 MiB).
        bound = 2 * INFLIGHT_BODY_BYTES + 32 * MiB
        assert peak - before < bound, f"grew {(peak - before) / MiB:.0f} MiB for {offered / MiB:.0f} MiB offered"

        # While the budget is full, a body on any route is refused, a request without one is served.
        put = httpx.put(server.base + "/v1/vehicles/RES-EV-1/meter", json={"meterId": "RES-1"}, headers=server.auth)
        assert put.status_code == 429 and put.headers["content-type"] == "application/problem+json"
        assert httpx.get(server.base + "/health").status_code == 200

        # The held bodies never complete: answered 408 at the body timeout, which frees the budget.
        for sock in held:
            answer = _answer(sock, BODY_TIMEOUT_S + 5)
            assert answer is not None and answer.status == 408

    assert (
        httpx.post(server.base + "/v1/ingest", json=meter("RES-1", hour_ago(0.5)), headers=server.auth).status_code
        == 201
    )
    chunked = httpx.post(
        server.base + "/v1/ingest",
        content=iter([json.dumps(meter("RES-2", t)).encode()]),  # an iterator is sent chunked
        headers={"content-type": "application/json"} | server.auth,
    )
    assert chunked.status_code == 201, chunked.text
    put = httpx.put(server.base + "/v1/vehicles/RES-EV-1/meter", json={"meterId": "RES-1"}, headers=server.auth)
    assert put.status_code == 201
    # Operators see the refusals.
    metrics = httpx.get(server.base + "/metrics", headers=server.auth).text
    refusals = [line for line in metrics.splitlines() if line.startswith("energy_ingest_http_requests_total{")]
    assert any('status="429"' in line and float(line.split()[-1]) >= len(refused) for line in refusals), refusals


def test_connections_beyond_the_cap_are_answered_503(server: Server) -> None:
    with ExitStack() as stack:
        holders = [stack.enter_context(closing(server.connect())) for _ in range(MAX_CONNECTIONS)]
        for sock in holders:
            sock.sendall(b"GET /health HTTP/1.1\r\n")  # a request begun: not idle, within the header timeout
        with closing(server.connect()) as extra:
            answer = _answer(extra, 5)
        assert answer is not None and answer.status == 503
        assert answer.headers["retry-after"].isdigit()
        answer.problem()
    # Once they are gone, new connections are served again.
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(server.base + "/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not serve again after the connections closed"
        time.sleep(0.1)
