"""PUT/GET/DELETE /v1/vehicles/{vehicleId}/meter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import msgspec
from litestar import Response, delete, get, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody

from energy_ingest.errors import InvalidInput, NotFound
from energy_ingest.http.context import ServicesDep
from energy_ingest.http.openapi import BAD_PARAMETERS, BODY_ERRORS, DATABASE_DOWN, ProblemOperation, problems
from energy_ingest.http.params import VehicleIdPath
from energy_ingest.links import service
from energy_ingest.links.repository import LinkRow
from energy_ingest.readings.model import DeviceId


class LinkRequest(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    meter_id: DeviceId
    from_: datetime | None = msgspec.field(default=None, name="from")


class Link(msgspec.Struct, rename="camel", omit_defaults=True):
    meter_id: str
    from_: datetime = msgspec.field(name="from")
    to: datetime | None
    source: Literal["manual", "ocpp"]  # ocpp: made by a charging session, which ends it
    session_id: int | None = None  # the charging session that made it (ocpp links only)


class LinkState(msgspec.Struct, rename="camel"):
    vehicle_id: str
    current: Link | None
    history: list[Link]


def _link(row: LinkRow) -> Link:
    return Link(
        meter_id=row.meter_id,
        from_=row.valid_from,
        to=row.valid_to,
        source="ocpp" if row.source == "ocpp" else "manual",
        session_id=row.session_id,
    )


def _state(vehicle_id: str, rows: list[LinkRow], now: datetime) -> LinkState:
    current = next(
        (r for r in rows if r.valid_from <= now and (r.valid_to is None or r.valid_to > now)),
        None,
    )
    return LinkState(
        vehicle_id=vehicle_id, current=_link(current) if current else None, history=[_link(r) for r in rows]
    )


@put(
    "/v1/vehicles/{vehicleId:str}/meter",
    tags=["links"],
    summary="Link a vehicle to a charger's meter",
    description="From `from` (default now) on; ends the vehicle's link in force at that instant.",
    response_description="The vehicle already had this meter: nothing changed",
    operation_class=ProblemOperation,
    responses={
        201: ResponseSpec(LinkState, description="Linked: the new link and the history", generate_examples=False),
        **problems(
            {
                400: "Invalid vehicle id, or a body that is not a link (`meterId`, optional `from` with a time zone)",
                409: "The meter serves another vehicle then, or the vehicle has a later link",
                503: DATABASE_DOWN,
                **BODY_ERRORS,
            }
        ),
    },
)
async def put_link(services: ServicesDep, data: JSONBody[LinkRequest], vehicleId: VehicleIdPath) -> Response[LinkState]:
    now = datetime.now(UTC)
    start = data.from_ or now
    if start.tzinfo is None:
        raise InvalidInput("`from` needs `Z` or an offset", errors=[{"field": "from", "reason": "no time zone"}])
    _, created = await service.link(services.pool, vehicleId, data.meter_id, start)
    if services.reads is not None:  # analytics read next must see the new link, even from a replica
        await services.reads.fence()
    rows = await service.history(services.pool, vehicleId)
    return Response(_state(vehicleId, rows, now), status_code=201 if created else 200)


@get(
    "/v1/vehicles/{vehicleId:str}/meter",
    opt={"scope": "read"},
    tags=["links"],
    summary="Current link and link history",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "The vehicle has never been linked to a meter", 503: DATABASE_DOWN}),
)
async def get_link(services: ServicesDep, vehicleId: VehicleIdPath) -> LinkState:
    rows = await service.history(services.pool, vehicleId)
    if not rows:
        raise NotFound(f"vehicle {vehicleId} has never been linked to a meter")
    return _state(vehicleId, rows, datetime.now(UTC))


@delete(
    "/v1/vehicles/{vehicleId:str}/meter",
    tags=["links"],
    summary="End the current link now",
    status_code=200,
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "The vehicle has no current link", 503: DATABASE_DOWN}),
)
async def delete_link(services: ServicesDep, vehicleId: VehicleIdPath) -> LinkState:
    now = datetime.now(UTC)
    await service.unlink(services.pool, vehicleId, now)
    if services.reads is not None:
        await services.reads.fence()
    return _state(vehicleId, await service.history(services.pool, vehicleId), now)
