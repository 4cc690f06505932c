"""Charge points and id tags over HTTP: POST/GET /v1/chargers, GET/DELETE /v1/chargers/{id},
PUT/GET/DELETE /v1/id-tags/{idTag}, GET /v1/id-tags."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from litestar import Response, delete, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter

from energy_ingest.chargers import service
from energy_ingest.chargers.service import CHARGER_ID, ID_TAG, ChargerInfo, IdTag, NewCharger
from energy_ingest.errors import InvalidInput, check_limit
from energy_ingest.http.context import ServicesDep
from energy_ingest.http.openapi import BAD_PARAMETERS, BODY_ERRORS, DATABASE_DOWN, ProblemOperation, problems
from energy_ingest.readings.model import DeviceId

MAX_LIMIT = 500
ChargerIdPath = Annotated[
    str, PathParameter(title="chargerId", pattern=CHARGER_ID.pattern, description="1–48 letters, digits or `._:-`")
]
IdTagPath = Annotated[str, PathParameter(title="idTag", pattern=ID_TAG.pattern, description="1–20 printable ASCII")]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Items per page, 1–500")]
Cursor = Annotated[str | None, QueryParameter(description="`nextCursor` of the previous page")]


class ChargerRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    charger_id: str
    password: str | None = None  # 16–40 characters; generated when absent
    meters: dict[int, DeviceId] = msgspec.field(default_factory=dict)  # connector → meter id, where not the default


class ChargerPage(msgspec.Struct, rename="camel"):
    chargers: list[ChargerInfo]
    next_cursor: str | None


class IdTagRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    vehicle_id: DeviceId | None


class IdTagPage(msgspec.Struct, rename="camel"):
    id_tags: list[IdTag]
    next_cursor: str | None


def _cursor(value: str | None, pattern: re.Pattern[str]) -> str | None:
    if value is not None and not pattern.match(value):
        raise InvalidInput(
            "`cursor` must be the `nextCursor` of a previous page",
            errors=[{"field": "cursor", "reason": "not a cursor given out by this service"}],
        )
    return value


@post(
    "/v1/chargers",
    tags=["chargers"],
    summary="Register a charge point; its OCPP password is in this answer and never again",
    description="The charge point connects to `/ocpp/{chargerId}` with subprotocol `ocpp1.6` and HTTP Basic "
    "credentials: its id as the user, this password (OCPP 1.6 security profile 1). Each connector's meter is "
    "`{chargerId}-{connectorId}` unless `meters` maps it to another meter id.",
    status_code=201,
    operation_class=ProblemOperation,
    responses=problems(
        {
            400: "Bad charger id, password (16–40 printable ASCII) or meter mapping",
            409: "A charge point with this id is registered already",
            503: DATABASE_DOWN,
            **BODY_ERRORS,
        }
    ),
)
async def register_charger(services: ServicesDep, data: JSONBody[ChargerRequest]) -> NewCharger:
    async with services.pool.connection() as conn:
        return await service.register(conn, data.charger_id, data.password, data.meters)


@get(
    "/v1/chargers",
    opt={"scope": "read"},
    tags=["chargers"],
    summary="Every registered charge point with its connectors, by id",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 503: DATABASE_DOWN}),
)
async def list_chargers(services: ServicesDep, limit: Limit = 100, cursor: Cursor = None) -> ChargerPage:
    rows = await service.page(services.pool, _cursor(cursor, CHARGER_ID), check_limit(limit, MAX_LIMIT))
    return ChargerPage(chargers=rows, next_cursor=rows[-1].charger_id if len(rows) == limit else None)


@get(
    "/v1/chargers/{chargerId:str}",
    opt={"scope": "read"},
    tags=["chargers"],
    summary="A charge point: what it said at boot, when it was last heard, each connector's live status",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No charge point has this id", 503: DATABASE_DOWN}),
)
async def get_charger(services: ServicesDep, chargerId: ChargerIdPath) -> ChargerInfo:
    return await service.describe(services.pool, chargerId)


@delete(
    "/v1/chargers/{chargerId:str}",
    tags=["chargers"],
    summary="Unregister a charge point (it can no longer connect; its readings and sessions stay)",
    status_code=204,
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No charge point has this id", 503: DATABASE_DOWN}),
)
async def delete_charger(services: ServicesDep, chargerId: ChargerIdPath) -> None:
    async with services.pool.connection() as conn:
        await service.remove(conn, chargerId)


@put(
    "/v1/id-tags/{idTag:str}",
    tags=["id-tags"],
    summary="Map an idTag to a vehicle (or to none: accepted, links nothing)",
    description="A StartTransaction for this tag links the vehicle to the connector's meter until it stops.",
    responses={
        201: ResponseSpec(IdTag, description="The tag is new", generate_examples=False),
        **problems({400: "Bad idTag or vehicle id", 503: DATABASE_DOWN, **BODY_ERRORS}),
    },
    response_description="The tag was known: its mapping is replaced",
    operation_class=ProblemOperation,
)
async def put_id_tag(services: ServicesDep, idTag: IdTagPath, data: JSONBody[IdTagRequest]) -> Response[IdTag]:
    tag, created = await service.put_id_tag(services.pool, idTag, data.vehicle_id)
    return Response(tag, status_code=201 if created else 200)


@get(
    "/v1/id-tags/{idTag:str}",
    opt={"scope": "read"},
    tags=["id-tags"],
    summary="The vehicle an idTag stands for",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "The idTag is not known", 503: DATABASE_DOWN}),
)
async def get_id_tag(services: ServicesDep, idTag: IdTagPath) -> IdTag:
    return await service.get_id_tag(services.pool, idTag)


@get(
    "/v1/id-tags",
    opt={"scope": "read"},
    tags=["id-tags"],
    summary="Every known idTag, by tag",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 503: DATABASE_DOWN}),
)
async def list_id_tags(services: ServicesDep, limit: Limit = 100, cursor: Cursor = None) -> IdTagPage:
    rows = await service.id_tags(services.pool, _cursor(cursor, ID_TAG), check_limit(limit, MAX_LIMIT))
    return IdTagPage(id_tags=rows, next_cursor=rows[-1].id_tag if len(rows) == limit else None)


@delete(
    "/v1/id-tags/{idTag:str}",
    tags=["id-tags"],
    summary="Forget an idTag (it is answered Invalid from now on, unless ACCEPT_UNKNOWN_ID_TAGS)",
    status_code=204,
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "The idTag is not known", 503: DATABASE_DOWN}),
)
async def delete_id_tag(services: ServicesDep, idTag: IdTagPath) -> None:
    await service.delete_id_tag(services.pool, idTag)
