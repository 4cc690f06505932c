"""GET /v1/meters/{meterId}/live and /v1/vehicles/{vehicleId}/live: one device's newest reading;
GET /v1/meters/live and /v1/vehicles/live: every device's, paginated by id, optionally only those
silent for longer than `stale` (offline detection)."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import QueryParameter

from energy_ingest.http.context import ServicesDep
from energy_ingest.http.openapi import BAD_PARAMETERS, DATABASE_DOWN, ProblemOperation, problems
from energy_ingest.http.params import MeterIdPath, VehicleIdPath, parse_device_cursor
from energy_ingest.live import service
from energy_ingest.live.service import MAX_LIMIT, MeterLive, MeterPage, RegisterEvent, VehicleLive, VehiclePage

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Devices per page, 1–1000")]
Cursor = Annotated[str | None, QueryParameter(description="`nextCursor` of the previous page")]
Stale = Annotated[
    str | None,
    QueryParameter(description="Only devices whose newest reading is older than this, e.g. 10m, 2h, 1d"),
]


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
    return await service.vehicles(services.read_pool, limit, parse_device_cursor("cursor", cursor), stale)


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
    return await service.meters(services.read_pool, limit, parse_device_cursor("cursor", cursor), stale)


@get(
    "/v1/meters/{meterId:str}/live",
    opt={"scope": "read"},
    tags=["live"],
    summary="A meter's newest reading",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No reading from this meter", 503: DATABASE_DOWN}),
)
async def meter_live(services: ServicesDep, meterId: MeterIdPath) -> MeterLive:
    return await service.meter(services.read_pool, meterId)


@get(
    "/v1/vehicles/{vehicleId:str}/live",
    opt={"scope": "read"},
    tags=["live"],
    summary="A vehicle's newest reading",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No reading from this vehicle", 503: DATABASE_DOWN}),
)
async def vehicle_live(services: ServicesDep, vehicleId: VehicleIdPath) -> VehicleLive:
    return await service.vehicle(services.read_pool, vehicleId)


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
    return await service.meter_resets(services.read_pool, meterId)


@get(
    "/v1/vehicles/{vehicleId:str}/resets",
    opt={"scope": "read"},
    tags=["live"],
    summary="A register vehicle's recorded resets and zero placeholders, oldest first",
    operation_class=ProblemOperation,
    responses=_RESETS,
)
async def vehicle_resets(services: ServicesDep, vehicleId: VehicleIdPath) -> list[RegisterEvent]:
    return await service.vehicle_resets(services.read_pool, vehicleId)
