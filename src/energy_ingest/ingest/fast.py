"""The production entry point of POST /v1/ingest, without the framework's per-request machinery.

Single-reading clients send thousands of tiny requests a second; for them routing, dependency
injection and the response pipeline cost more than decoding and writing the reading. This ASGI
layer answers exactly `POST /v1/ingest` itself, through the same `accept` and the same problem
mapping as the documented route, and hands every other request to the application.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import Receive, Scope, Send

from energy_ingest.ingest.routes import accept
from energy_ingest.metrics import REQUESTS
from energy_ingest.problems import PROBLEM_JSON, Problem, ProblemDetails, to_problem
from energy_ingest.services import Services

_PATH = "/v1/ingest"
_encode = msgspec.json.Encoder().encode


class _TooLarge(Exception):
    pass


class IngestFastPath:
    def __init__(self, app: Litestar) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["path"] == _PATH and scope["method"] == "POST":
            await self._ingest(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _ingest(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Services = self.app.state.services
        media_type = ""
        for name, value in scope["headers"]:
            if name == b"content-type":
                media_type = value.split(b";", 1)[0].strip().decode("latin-1")
        try:
            body = await _read_body(receive, services.settings.body_limit_bytes)
            answer = await accept(services, media_type, body)
        except _TooLarge:
            limit = services.settings.body_limit_bytes
            await _send(send, *_problem(Problem(413, f"The body is larger than {limit} bytes.")))
        except Exception as exc:
            await _send(send, *_problem(to_problem(exc, services.settings.retry_after_s)))
        else:
            await _send(send, 201, _encode(answer), b"application/json", [])


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            raise Problem(400, "The client went away before the body was complete.")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _problem(problem: Problem) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    body = ProblemDetails(title=problem.title, status=problem.status, detail=problem.detail, errors=problem.errors)
    headers = [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
    return problem.status, _encode(body), PROBLEM_JSON.encode(), headers


async def _send(send: Send, status: int, body: bytes, media_type: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    REQUESTS.labels("POST", str(status)).inc()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", media_type), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
