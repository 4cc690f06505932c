"""GET /v1/meters/{meterId}/live and /v1/vehicles/{vehicleId}/live: one device's newest reading;
GET /v1/meters/live and /v1/vehicles/live: every device's, paginated by id, optionally only those
silent for longer than `stale` (offline detection)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec
from litestar import get
from litestar.params import QueryParameter

from energy_ingest.errors import InvalidInput, NotFound
from energy_ingest.http.context import ServicesDep
from energy_ingest.http.openapi import BAD_PARAMETERS, DATABASE_DOWN, ProblemOperation, problems
from energy_ingest.http.params import MeterIdPath, VehicleIdPath, parse_device_cursor
from energy_ingest.kinds import METER, VEHICLE
from energy_ingest.live import repository
from energy_ingest.live.repository import MeterLive, RegisterEvent, VehicleLive

MAX_LIMIT = 1000
MAX_STALE = timedelta(days=3650)
_DURATION = re.compile(r"^(\d{1,9})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Devices per page, 1–1000")]
Cursor = Annotated[str | None, QueryParameter(description="`nextCursor` of the previous page")]
Stale = Annotated[
    str | None,
    QueryParameter(description="Only devices whose newest reading is older than this, e.g. 10m, 2h, 1d"),
]


class VehiclePage(msgspec.Struct, rename="camel"):
    devices: list[VehicleLive]
    next_cursor: str | None


class MeterPage(msgspec.Struct, rename="camel"):
    devices: list[MeterLive]
    next_cursor: str | None


def _silent_since(stale: str | None) -> datetime | None:
    if stale is None:
        return None
    match = _DURATION.match(stale.strip())
    if not match:
        raise InvalidInput(
            "`stale` must be a duration such as 90s, 10m, 2h or 1d",
            errors=[{"field": "stale", "reason": "not a duration"}],
        )
    silence = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if silence > MAX_STALE:
        raise InvalidInput("`stale` may be at most 3650 days", errors=[{"field": "stale", "reason": "too long"}])
    return datetime.now(UTC) - silence


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"`limit` must be 1–{MAX_LIMIT}", errors=[{"field": "limit", "reason": "out of range"}])
    return limit


_ERRORS = problems({400: BAD_PARAMETERS + " (`limit` out of 1–1000, `stale` not a duration)", 503: DATABASE_DOWN})


@get(
    "/v1/vehicles/live",
    opt={"scope": "read"},
    tags=["live"],
    summary="Every vehicle's newest reading, by id",
    operation_class=ProblemOperation,
    responses=_ERRORS,
)
async def vehicles_live(
    services: ServicesDep, limit: Limit = 100, cursor: Cursor = None, stale: Stale = None
) -> VehiclePage:
    rows = await repository.vehicles(
        services.read_pool, _limit(limit), parse_device_cursor("cursor", cursor), _silent_since(stale)
    )
    return VehiclePage(devices=rows, next_cursor=rows[-1].vehicle_id if len(rows) == limit else None)


@get(
    "/v1/meters/live",
    opt={"scope": "read"},
    tags=["live"],
    summary="Every meter's newest reading, by id",
    operation_class=ProblemOperation,
    responses=_ERRORS,
)
async def meters_live(
    services: ServicesDep, limit: Limit = 100, cursor: Cursor = None, stale: Stale = None
) -> MeterPage:
    rows = await repository.meters(
        services.read_pool, _limit(limit), parse_device_cursor("cursor", cursor), _silent_since(stale)
    )
    return MeterPage(devices=rows, next_cursor=rows[-1].meter_id if len(rows) == limit else None)


@get(
    "/v1/meters/{meterId:str}/live",
    opt={"scope": "read"},
    tags=["live"],
    summary="A meter's newest reading",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No reading from this meter", 503: DATABASE_DOWN}),
)
async def meter_live(services: ServicesDep, meterId: MeterIdPath) -> MeterLive:
    found = await repository.meter(services.read_pool, meterId)
    if found is None:
        raise NotFound(f"no reading from meter {meterId}")
    return found


@get(
    "/v1/vehicles/{vehicleId:str}/live",
    opt={"scope": "read"},
    tags=["live"],
    summary="A vehicle's newest reading",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No reading from this vehicle", 503: DATABASE_DOWN}),
)
async def vehicle_live(services: ServicesDep, vehicleId: VehicleIdPath) -> VehicleLive:
    found = await repository.vehicle(services.read_pool, vehicleId)
    if found is None:
        raise NotFound(f"no reading from vehicle {vehicleId}")
    return found


_RESETS = problems({400: BAD_PARAMETERS, 404: "The device has sent no reading", 503: DATABASE_DOWN})


@get(
    "/v1/meters/{meterId:str}/resets",
    opt={"scope": "read"},
    tags=["live"],
    summary="A register meter's recorded resets and zero placeholders, oldest first",
    operation_class=ProblemOperation,
    responses=_RESETS,
)
async def meter_resets(services: ServicesDep, meterId: MeterIdPath) -> list[RegisterEvent]:
    found = await repository.register_events(services.read_pool, METER, meterId)
    if found is None:
        raise NotFound(f"meter {meterId} has sent no reading")
    return found


@get(
    "/v1/vehicles/{vehicleId:str}/resets",
    opt={"scope": "read"},
    tags=["live"],
    summary="A register vehicle's recorded resets and zero placeholders, oldest first",
    operation_class=ProblemOperation,
    responses=_RESETS,
)
async def vehicle_resets(services: ServicesDep, vehicleId: VehicleIdPath) -> list[RegisterEvent]:
    found = await repository.register_events(services.read_pool, VEHICLE, vehicleId)
    if found is None:
        raise NotFound(f"vehicle {vehicleId} has sent no reading")
    return found
