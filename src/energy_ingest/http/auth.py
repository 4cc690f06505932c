"""Who may come in: every route needs a bearer key with the route's scope, except the public ones.

A route names its scope in `opt={"scope": …}` (default `admin`, so a route that forgets is closed,
not open). The guard runs after routing and before any body is read.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import OpenAPIHeader, OpenAPIResponse, OpenAPIType, Schema
from litestar.routes import ASGIRoute, HTTPRoute

from energy_ingest.errors import Unauthenticated
from energy_ingest.http.context import Services
from energy_ingest.http.openapi import problem_objects
from energy_ingest.keys.service import NO_AUTH, Principal
from energy_ingest.metrics import AUTH_FAILURES

# Liveness and readiness for orchestrators; the API's documentation (it holds no data); the landing page.
# The dashboard (/ui) is not open: its own guard asks for its signed session cookie instead of a bearer key
# (dashboard/endpoints.py), and answers a redirect to its sign-in page without one.
PUBLIC_PATHS = frozenset({"/health", "/ready", "/openapi.json", "/docs", "/", "/ui"})
PUBLIC_PREFIXES = ("/docs/", "/ui/")


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


_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def document_auth(app: Litestar) -> None:
    """Make the OpenAPI document say what the guard does: public operations need no key; every other
    one answers 401 without a valid key and 403 without its scope (unless it already describes them)."""
    scopes: dict[tuple[str, str], str] = {}
    for route in app.routes:
        if isinstance(route, ASGIRoute):
            scopes[(route.path_format, "post")] = str(route.route_handler.opt.get("scope", "admin"))
        elif isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                for verb in handler.http_methods:
                    scopes[(route.path_format, verb.lower())] = str(handler.opt.get("scope", "admin"))
    for path, item in (app.openapi_schema.paths or {}).items():
        for method in _METHODS:
            op = getattr(item, method, None)
            if op is None:
                continue
            if is_public(path):
                op.security = []
                continue
            scope = scopes.get((path, method), "admin")
            answers = problem_objects(
                {401: "No key, or a key that is unknown or revoked", 403: f"The key lacks the `{scope}` scope"}
            )
            if isinstance(unauthorized := answers["401"], OpenAPIResponse):
                unauthorized.headers = {"WWW-Authenticate": _WWW_AUTHENTICATE}
            responses = dict(op.responses or {})
            for status, answer in answers.items():
                responses.setdefault(status, answer)
            op.responses = dict(sorted(responses.items()))


_WWW_AUTHENTICATE = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.STRING), description='`Bearer realm="energy-ingest"`', required=True
)
