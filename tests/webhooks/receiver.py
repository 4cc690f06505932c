"""A real HTTP receiver for webhook deliveries, on a free loopback port, in a thread: it records every request
and answers as told (a status, or no answer at all for a while), and checks signatures as a receiver should."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG = -1  # an answer that never comes (until the receiver is closed or released)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    answered: int  # the status answered, HANG when none was

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def delivery_id(self) -> str:
        return self.headers["x-energy-ingest-delivery"]

    def signed_by(self, secret: str) -> bool:
        """What a receiver checks: the HMAC-SHA256 of `<timestamp>.<body>` under the secret, in constant time."""
        stamp = self.headers["x-energy-ingest-timestamp"]
        expected = hmac.new(secret.encode(), stamp.encode() + b"." + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest("sha256=" + expected, self.headers["x-energy-ingest-signature"])


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._answers: list[int] = []  # the next answers, in order; then 200
        self._lock = threading.Lock()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    status = receiver._answers.pop(0) if receiver._answers else 200
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status)
                    )
                if status == HANG:
                    receiver._release.wait(60)
                    return
                with contextlib.suppress(OSError):
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    payload = b"ok" if status < 300 else b"try again later"
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def answer(self, *statuses: int) -> None:
        """Answer the next requests with these statuses (HANG: no answer), then 200 again."""
        with self._lock:
            self._answers.extend(statuses)

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, done: Callable[[list[Received]], bool], timeout: float = 30.0) -> list[Received]:
        """Wait until the requests received so far satisfy `done`; fail with what came if they never do."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()
            if done(got):
                return got
            assert time.monotonic() < deadline, f"the receiver got {[r.json for r in got]}"
            time.sleep(0.05)

    def release(self) -> None:
        self._release.set()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.close()
