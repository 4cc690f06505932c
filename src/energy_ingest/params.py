"""Parsing of query parameters shared by several routes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

import msgspec
from litestar.params import PathParameter

from energy_ingest.problems import Problem
from energy_ingest.telemetry.readings import DEVICE_ID_PATTERN

_INSTANT = msgspec.json.Decoder(datetime)
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
        raise Problem(
            400,
            f"`{name}` must be an RFC 3339 timestamp with `Z` or an offset, e.g. 2026-02-08T10:00:00Z",
            errors=[{"field": name, "reason": "not an RFC 3339 timestamp with a time zone"}],
        )
    return instant


def _device_id(name: str) -> PathParameter:
    return PathParameter(title=name, pattern=DEVICE_ID_PATTERN, description="1–64 letters, digits or `._:-`")


# Path parameters holding a device id: the same rule as in readings, checked before any query.
VehicleIdPath = Annotated[str, _device_id("vehicleId")]
MeterIdPath = Annotated[str, _device_id("meterId")]
