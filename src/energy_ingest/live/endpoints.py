"""GET /v1/meters/{meterId}/live and /v1/vehicles/{vehicleId}/live."""

from __future__ import annotations

from litestar import get

from energy_ingest.errors import NotFound
from energy_ingest.http.context import ServicesDep
from energy_ingest.http.openapi import BAD_PARAMETERS, DATABASE_DOWN, ProblemOperation, problems
from energy_ingest.http.params import MeterIdPath, VehicleIdPath
from energy_ingest.live import repository
from energy_ingest.live.repository import MeterLive, VehicleLive


@get(
    "/v1/meters/{meterId:str}/live",
    opt={"scope": "read"},
    tags=["live"],
    summary="A meter's newest reading",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No reading from this meter", 503: DATABASE_DOWN}),
)
async def meter_live(services: ServicesDep, meterId: MeterIdPath) -> MeterLive:
    found = await repository.meter(services.pool, meterId)
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
    found = await repository.vehicle(services.pool, vehicleId)
    if found is None:
        raise NotFound(f"no reading from vehicle {vehicleId}")
    return found
