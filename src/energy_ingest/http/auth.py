"""Who may come in: every route needs a bearer key with the route's scope, except the public ones.

A route names its scope in `opt={"scope": …}` (default `admin`, so a route that forgets is closed,
not open). The guard runs after routing and before any body is read.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from energy_ingest.errors import Unauthenticated
from energy_ingest.http.context import Services
from energy_ingest.keys.service import NO_AUTH, Principal
from energy_ingest.metrics import AUTH_FAILURES

# Liveness and readiness for orchestrators; the API's documentation (it holds no data).
PUBLIC_PATHS = frozenset({"/health", "/ready", "/openapi.json", "/docs"})
PUBLIC_PREFIXES = ("/docs/",)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Litestar guard: set the request's principal, or answer 401/403."""
    if is_public(connection.scope["path"]):
        return
    services: Services = connection.app.state.services
    if not services.settings.auth:
        principal = NO_AUTH
    else:
        header = None
        for name, value in connection.scope["headers"]:
            if name == b"authorization":
                header = value
                break
        try:
            principal = await services.keys.authenticate(header, services.pool)
        except Unauthenticated:
            AUTH_FAILURES.inc()
            raise
    principal.require(str(handler.opt.get("scope", "admin")))
    connection.scope["state"]["principal"] = principal


def principal_of(scope: Any) -> Principal:
    principal: Principal = scope["state"]["principal"]
    return principal
