"""Domain errors: plain exceptions that any part of the service raises and any way in translates.

The HTTP edge turns them into problem+json (http/problems.py); MQTT, OCPP and the bus answer them
in their own terms. Nothing here knows about a protocol.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Something the caller asked for cannot be done; `detail` says why in words for a person."""

    title = "Error"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None, title: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors  # [{"field": …, "reason": …, …}] where input was at fault
        if title is not None:
            self.title = title


class InvalidInput(DomainError):
    """The request or its readings break a rule; nothing of it was taken."""

    title = "Bad Request"


class PayloadTooLarge(DomainError):
    title = "Payload Too Large"


class UnsupportedFormat(DomainError):
    title = "Unsupported Media Type"


class Unauthenticated(DomainError):
    """No credentials, or credentials that are unknown, revoked or malformed (never said which)."""

    title = "Unauthorized"


class Forbidden(DomainError):
    """Credentials are good but do not allow this (scope, device binding)."""

    title = "Forbidden"


class NotFound(DomainError):
    title = "Not Found"


class Conflict(DomainError):
    title = "Conflict"


class Overloaded(DomainError):
    """Too much at once (a full writer, a key's rate limit); retry after `retry_after` seconds."""

    title = "Too Many Requests"

    def __init__(self, detail: str, *, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """The database (or another part the answer needs) cannot be reached; retry later."""

    title = "Service Unavailable"

    def __init__(self, detail: str, *, retry_after: float | None = None, title: str | None = None) -> None:
        super().__init__(detail, title=title)
        self.retry_after = retry_after


def check_limit(limit: int, most: int) -> int:
    """A page size of 1 to `most`, or InvalidInput naming `limit`."""
    if not 1 <= limit <= most:
        raise InvalidInput(f"`limit` must be 1–{most}", errors=[{"field": "limit", "reason": "out of range"}])
    return limit
