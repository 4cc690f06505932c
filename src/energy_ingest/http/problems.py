"""RFC 9457 problem details: every error the API gives is `application/problem+json`.

The one place where domain errors (errors.py) and framework errors become HTTP answers."""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from energy_ingest.db.pool import is_unavailable
from energy_ingest.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedFormat,
)
from energy_ingest.metrics import DB_ERRORS, REJECTED

log = logging.getLogger("energy_ingest.api")

PROBLEM_JSON = "application/problem+json"


class ProblemDetails(msgspec.Struct, omit_defaults=True):
    """The body of every error answer."""

    title: str
    status: int
    detail: str
    type: str = "about:blank"
    errors: list[dict[str, Any]] | None = None


class Problem:
    """An answer to send as problem+json (not an exception: code raises domain errors, see errors.py)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


# Each domain error's status; the first class an error is an instance of decides.
STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (InvalidInput, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (UnsupportedFormat, 415),
    (Overloaded, 429),
    (Unavailable, 503),
)


def problem_response(problem: Problem) -> Response[bytes]:
    body = ProblemDetails(title=problem.title, status=problem.status, detail=problem.detail, errors=problem.errors)
    return Response(
        content=msgspec.json.encode(body),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def _api_name(key: str) -> str:
    """The parameter as clients name it: Litestar reports the handler's argument (`min_ac_kwh`, `from_`)."""
    head, *rest = key.rstrip("_").split("_")
    return head + "".join(part.title() for part in rest)


def _from_http(exc: HTTPException) -> Problem:
    errors = None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        errors = [
            {"field": _api_name(str(e.get("key", "?"))), "reason": e.get("message", "")}
            for e in exc.extra
            if isinstance(e, dict)
        ]
    detail = exc.detail or HTTPStatus(exc.status_code).phrase
    return Problem(exc.status_code, detail, errors=errors, headers=exc.headers or None)


def _from_domain(exc: DomainError, retry_after_s: int) -> Problem:
    status = next(code for kind, code in STATUS if isinstance(exc, kind))
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="energy-ingest"'
    elif isinstance(exc, Overloaded):
        REJECTED.inc()
        headers["Retry-After"] = str(math.ceil(exc.retry_after))
    elif isinstance(exc, Unavailable):
        if exc.title == "Service Unavailable":
            log.warning("database unavailable: %s", exc)
            DB_ERRORS.inc()
        else:  # a write conflict after every retry, a broker away: worth a look, not an error each time
            log.warning("%s: %s", exc.title, exc)
        headers["Retry-After"] = str(math.ceil(exc.retry_after or retry_after_s))
    return Problem(status, exc.detail, title=exc.title, errors=exc.errors, headers=headers)


def to_problem(exc: Exception, retry_after_s: int) -> Problem:
    """The answer for any exception a request can end in: one mapping for every entry point."""
    if isinstance(exc, DomainError) and any(isinstance(exc, kind) for kind, _ in STATUS):
        return _from_domain(exc, retry_after_s)
    if isinstance(exc, HTTPException):
        return _from_http(exc)
    if is_unavailable(exc):
        return _from_domain(Unavailable("The database is unavailable; nothing was stored. Retry later."), retry_after_s)
    log.error("unhandled error", exc_info=exc)
    return Problem(500, "An unexpected error occurred; it has been logged.")


def make_handlers(retry_after_s: int) -> dict[type[Exception], Any]:
    """Litestar's exception handlers, all through `to_problem`."""

    def handle(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        return problem_response(to_problem(exc, retry_after_s))

    return {Exception: handle}
