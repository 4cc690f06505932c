"""The cursor of a newest-first list (alerts, sessions): where the last row of a page stood, by its time and id,
as an opaque token; anything else sent as one is InvalidInput naming `cursor`."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from energy_ingest.errors import InvalidInput

MAX_CHARS = 100
MAX_DIGITS = 18  # an id within bigint


def encode(at: datetime, number: int) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{number}".encode()).decode().rstrip("=")


def parse(cursor: str | None) -> tuple[datetime, int] | None:
    """(time, id) of the row a page ends at, or None for the first page."""
    if cursor is None:
        return None
    try:
        if len(cursor) > MAX_CHARS:
            raise ValueError(cursor)
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, number = text.partition("|")
        at = datetime.fromisoformat(stamp)
        if at.tzinfo is None or not number.isdigit() or len(number) > MAX_DIGITS:
            raise ValueError(cursor)
        return at, int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(
            "`cursor` must be the `nextCursor` of a previous page",
            errors=[{"field": "cursor", "reason": "not a cursor given out by this service"}],
        ) from None
