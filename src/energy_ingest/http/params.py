"""Parsing of query parameters shared by several routes."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar.params import PathParameter

from energy_ingest.errors import InvalidInput
from energy_ingest.readings.model import DEVICE_ID_PATTERN

_INSTANT = msgspec.json.Decoder(datetime)
# Instants a window may touch: wide for any fleet, narrow enough that no bucket or zone arithmetic overflows.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
# A '+' in a query string arrives as a space unless the client encoded it.
_SPACED_OFFSET = re.compile(r" (\d{2}:\d{2})$")


def parse_instant(name: str, value: str) -> datetime:
    """An RFC 3339 timestamp with `Z` or an offset, or a 400 naming the parameter."""
    text = _SPACED_OFFSET.sub(r"+\1", value.strip())
    try:
        instant = _INSTANT.decode(msgspec.json.encode(text))
    except msgspec.ValidationError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise InvalidInput(
            f"`{name}` must be an RFC 3339 timestamp with `Z` or an offset, e.g. 2026-02-08T10:00:00Z",
            errors=[{"field": name, "reason": "not an RFC 3339 timestamp with a time zone"}],
        )
    if not EARLIEST <= instant < LATEST:
        raise InvalidInput(
            f"`{name}` must lie between 1970-01-01 and 3000-01-01",
            errors=[{"field": name, "reason": "outside 1970-01-01 to 3000-01-01"}],
        )
    return instant


def parse_device_cursor(name: str, value: str | None) -> str | None:
    """A cursor that is a device id (the last id of the previous page), or a 400 naming the parameter."""
    if value is not None and not _DEVICE_ID.match(value):
        raise InvalidInput(
            f"`{name}` must be the `nextCursor` of a previous page",
            errors=[{"field": name, "reason": "not a cursor given out by this service"}],
        )
    return value


def parse_device_id(name: str, value: str | None) -> str | None:
    """A device id given as a query parameter, or a 400 naming it."""
    if value is not None and not _DEVICE_ID.match(value):
        raise InvalidInput(
            f"`{name}` must be a device id: 1–64 letters, digits or `._:-`",
            errors=[{"field": name, "reason": "not a device id"}],
        )
    return value


def parse_finite(name: str, value: float | None) -> float | None:
    """A finite query number, or a 400 naming the parameter (NaN and infinities mean nothing here)."""
    if value is not None and not math.isfinite(value):
        raise InvalidInput(f"`{name}` must be a finite number", errors=[{"field": name, "reason": "not finite"}])
    return value


def _device_id(name: str) -> PathParameter:
    return PathParameter(title=name, pattern=DEVICE_ID_PATTERN, description="1–64 letters, digits or `._:-`")


# Path parameters holding a device id: the same rule as in readings, checked before any query.
VehicleIdPath = Annotated[str, _device_id("vehicleId")]
MeterIdPath = Annotated[str, _device_id("meterId")]
