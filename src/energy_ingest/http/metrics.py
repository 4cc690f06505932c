"""GET /metrics (Prometheus text, all workers) and the middleware that counts answers."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from energy_ingest.metrics import REQUESTS, registry


@get(
    "/metrics",
    opt={"scope": "read"},
    tags=["health"],
    summary="Prometheus metrics (all workers)",
    media_type="text/plain",
    response_description="Prometheus text exposition format",
)
async def metrics_endpoint() -> Response[bytes]:
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)


def count_requests(app: ASGIApp) -> ASGIApp:
    """ASGI middleware counting answers by method and status."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method: Any = scope.get("method", "")

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                REQUESTS.labels(method, str(message["status"])).inc()
            await send(message)

        await app(scope, receive, counting_send)

    return middleware
