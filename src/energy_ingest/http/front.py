"""The front door of every request, before routing: the Host check (no DNS rebinding) and the
worker's budget of request-body bytes held in memory.

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
from energy_ingest.errors import Overloaded
from energy_ingest.http.context import Services
from energy_ingest.http.problems import PROBLEM_JSON, Problem, ProblemDetails
from energy_ingest.metrics import REQUESTS

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


_PROBES = frozenset({"/health", "/ready"})


def _host_name(host: bytes) -> str:
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):  # [::1]:8000
        return text[: text.find("]") + 1]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _bad_host(host: bytes) -> Problem:
    shown = host.decode("latin-1")[:100] or "none"
    return Problem(
        400,
        f"Host {shown!r} is not one this service answers to: add it to ALLOWED_HOSTS.",
        title="Host not allowed",
        errors=[{"field": "Host", "reason": "not in ALLOWED_HOSTS"}],
    )


def _too_large(limit: int) -> Problem:
    return Problem(413, f"The body is larger than {limit} bytes.", headers={"Connection": "close"})


def _over_budget(retry_after_s: int) -> Problem:
    return Problem(
        429,
        "The server holds as many request bodies as it can; nothing of this request was stored. "
        "Retry after the given delay.",
        headers={"Retry-After": str(retry_after_s), "Connection": "close"},
    )


class FrontDoor:
    def __init__(self, app: Litestar) -> None:
        self.app = app
        self._budget: BodyBudget | None = None

    def _body_budget(self, settings: Settings) -> BodyBudget:
        # The settings arrive with the app's lifespan, after this wrapper is built.
        if self._budget is None:
            self._budget = BodyBudget(settings.inflight_body_bytes)
        return self._budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.WEBSOCKET:
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        services: Services = self.app.state.services
        settings = services.settings
        declared: int | None = None
        chunked = False
        host = b""
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
            elif name == b"host":
                host = value
        method: str = scope["method"]
        # Probes need no Host check: they answer nothing a rebound browser could use.
        if _host_name(host) not in settings.hosts and scope["path"] not in _PROBES:
            await _send(send, method, *_problem(_bad_host(host)))
            return
        if declared is not None and declared > settings.body_limit_bytes:
            await _send(send, method, *_problem(_too_large(settings.body_limit_bytes)))
            return
        reservation = _Reservation(self._body_budget(settings))
        if declared and not reservation.grow(declared):
            await _send(send, method, *_problem(_over_budget(settings.retry_after_s)))
            return
        try:
            if chunked and declared is None:
                await self.app(scope, _metered(receive, reservation), send)
            else:
                await self.app(scope, receive, send)
        finally:
            reservation.release()

    async def _websocket(self, scope: Scope, receive: Receive, send: Any) -> None:
        """Charge points: the same Host rule as every request, then the WebSocket app."""
        services: Services = self.app.state.services
        host = next((value for name, value in scope["headers"] if name == b"host"), b"")
        if services.websocket is not None and _host_name(host) in services.settings.hosts:
            await services.websocket(scope, receive, send)
            return
        await receive()  # websocket.connect
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        status, body, media_type, headers = _problem(_bad_host(host))
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(b"content-type", media_type), (b"content-length", str(len(body)).encode()), *headers],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})


def _metered(receive: Receive, reservation: _Reservation) -> Receive:
    """`receive` for a chunked body: each chunk is reserved before the route holds it."""

    async def metered() -> ReceiveMessage:
        message = await receive()
        if message["type"] == "http.request" and not reservation.grow(len(message.get("body", b""))):
            # Raised inside the route's body reading, so the app answers it as problem+json.
            raise Overloaded(
                "The server holds as many request bodies as it can; nothing of this request was stored. "
                "Retry after the given delay."
            )
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
