"""The production entry point of POST /v1/ingest, without the framework's per-request machinery,
and the worker's budget of request-body bytes held in memory.

Single-reading clients send thousands of tiny requests a second; for them routing, dependency
injection and the response pipeline cost more than decoding and writing the reading. This ASGI
layer answers exactly `POST /v1/ingest` itself, through the same `accept` and the same problem
mapping as the documented route, and hands every other request to the application.

Every request with a body, on any route, first reserves its declared Content-Length from the
worker's `inflight_body_bytes` budget (a chunked body reserves chunk by chunk): a request the budget
cannot cover is answered 429 before its body is read, so the bodies a worker holds stay bounded
whatever clients send. A Content-Length over the body limit is answered 413 without reading.
Both answers close the connection, as the unread body would otherwise follow.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import Receive, ReceiveMessage, Scope, Send

from energy_ingest.config import Settings
from energy_ingest.ingest.routes import accept
from energy_ingest.metrics import REQUESTS
from energy_ingest.problems import PROBLEM_JSON, Problem, ProblemDetails, to_problem
from energy_ingest.services import Services

_PATH = "/v1/ingest"
_encode = msgspec.json.Encoder().encode


class BodyBudget:
    """Bytes of request bodies one worker may hold at once (one event loop: no lock needed)."""

    __slots__ = ("capacity", "held")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.capacity:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class _Reservation:
    """One request's share of the budget; grows with a chunked body, returned when the request ends."""

    __slots__ = ("budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0

    def grow(self, size: int) -> bool:
        if not self.budget.take(size):
            return False
        self.size += size
        return True

    def release(self) -> None:
        self.budget.give(self.size)
        self.size = 0


def _too_large(limit: int) -> Problem:
    return Problem(413, f"The body is larger than {limit} bytes.", headers={"Connection": "close"})


def _over_budget(retry_after_s: int) -> Problem:
    return Problem(
        429,
        "The server holds as many request bodies as it can; nothing of this request was stored. "
        "Retry after the given delay.",
        headers={"Retry-After": str(retry_after_s), "Connection": "close"},
    )


class _OverBudget(Exception):
    pass


class IngestFastPath:
    def __init__(self, app: Litestar) -> None:
        self.app = app
        self._budget: BodyBudget | None = None

    def _body_budget(self, settings: Settings) -> BodyBudget:
        # The settings arrive with the app's lifespan, after this wrapper is built.
        if self._budget is None:
            self._budget = BodyBudget(settings.inflight_body_bytes)
        return self._budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        services: Services = self.app.state.services
        settings = services.settings
        declared: int | None = None
        chunked = False
        media_type = ""
        for name, value in scope["headers"]:
            if name == b"content-length":
                # httptools refuses a malformed or repeated one before this; other servers may not.
                try:
                    declared = int(value)
                except ValueError:
                    await _send(send, scope["method"], *_problem(Problem(400, "The Content-Length is not a number.")))
                    return
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"content-type":
                media_type = value.split(b";", 1)[0].strip().decode("latin-1")
        method: str = scope["method"]
        if declared is not None and declared > settings.body_limit_bytes:
            await _send(send, method, *_problem(_too_large(settings.body_limit_bytes)))
            return
        reservation = _Reservation(self._body_budget(settings))
        if declared and not reservation.grow(declared):
            await _send(send, method, *_problem(_over_budget(settings.retry_after_s)))
            return
        growing = chunked and declared is None
        try:
            if scope["path"] == _PATH and method == "POST":
                await self._ingest(services, media_type, reservation if growing else None, receive, send)
            elif growing:
                await self.app(scope, _metered(receive, reservation, settings.retry_after_s), send)
            else:
                await self.app(scope, receive, send)
        finally:
            reservation.release()

    async def _ingest(
        self, services: Services, media_type: str, reservation: _Reservation | None, receive: Receive, send: Send
    ) -> None:
        settings = services.settings
        try:
            body = await _read_body(receive, settings.body_limit_bytes, reservation)
            answer = await accept(services, media_type, body)
        except _OverBudget:
            await _send(send, "POST", *_problem(_over_budget(settings.retry_after_s)))
        except Exception as exc:
            await _send(send, "POST", *_problem(to_problem(exc, settings.retry_after_s)))
        else:
            await _send(send, "POST", 201, _encode(answer), b"application/json", [])


async def _read_body(receive: Receive, limit: int, reservation: _Reservation | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            raise Problem(400, "The client went away before the body was complete.")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if reservation is not None and not reservation.grow(len(chunk)):
            raise _OverBudget
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _metered(receive: Receive, reservation: _Reservation, retry_after_s: int) -> Receive:
    """`receive` for another route's chunked body: each chunk is reserved before the route holds it."""

    async def metered() -> ReceiveMessage:
        message = await receive()
        if message["type"] == "http.request" and not reservation.grow(len(message.get("body", b""))):
            # Raised inside the route's body parsing, so the app answers it as problem+json.
            raise _over_budget(retry_after_s)
        return message

    return metered


def _problem(problem: Problem) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    body = ProblemDetails(title=problem.title, status=problem.status, detail=problem.detail, errors=problem.errors)
    headers = [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
    return problem.status, _encode(body), PROBLEM_JSON.encode(), headers


async def _send(
    send: Send, method: str, status: int, body: bytes, media_type: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    REQUESTS.labels(method, str(status)).inc()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", media_type), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
