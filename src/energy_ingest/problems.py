"""RFC 9457 problem details: every error the API gives is `application/problem+json`."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from energy_ingest.ingest.writer import DatabaseUnavailable, Overloaded, WriteConflict, is_unavailable
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


class Problem(Exception):
    """An error to answer as problem+json; raised by services and routes alike."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


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


def to_problem(exc: Exception, retry_after_s: int) -> Problem:
    """The answer for any exception a request can end in: one mapping for every entry point."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, HTTPException):
        return _from_http(exc)
    if isinstance(exc, Overloaded):
        REJECTED.inc()
        return Problem(
            429,
            "The ingest queue is full; nothing of this request was accepted. Retry after the given delay.",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, WriteConflict):
        log.error("write conflict after every retry: %s", exc)
        return Problem(
            503,
            "Concurrent writes kept conflicting; nothing of this request was stored. Retry after the given delay.",
            title="Write conflict",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, DatabaseUnavailable) or is_unavailable(exc):
        log.warning("database unavailable: %s", exc)
        DB_ERRORS.inc()
        return Problem(
            503,
            "The database is unavailable; nothing was stored. Retry later.",
            title="Service Unavailable",
            headers={"Retry-After": str(retry_after_s)},
        )
    log.error("unhandled error", exc_info=exc)
    return Problem(500, "An unexpected error occurred; it has been logged.")


def make_handlers(retry_after_s: int) -> dict[type[Exception], Any]:
    """Litestar's exception handlers, all through `to_problem`."""

    def handle(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        return problem_response(to_problem(exc, retry_after_s))

    return {Exception: handle}
