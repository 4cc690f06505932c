"""GET /v1/sessions and /v1/sessions/{sessionId}: charging sessions with their energy."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import PathParameter, QueryParameter

from energy_ingest.chargers.service import check_charger_id
from energy_ingest.http.context import ServicesDep
from energy_ingest.http.openapi import BAD_PARAMETERS, DATABASE_DOWN, ProblemOperation, problems
from energy_ingest.http.params import parse_device_id, parse_instant
from energy_ingest.sessions import service
from energy_ingest.sessions.service import MAX_LIMIT, Session, SessionPage

SessionIdPath = Annotated[int, PathParameter(ge=1, le=2**31 - 1, description="The OCPP transactionId")]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Sessions per page, 1–200")]
Text = Annotated[str | None, QueryParameter()]


@get(
    "/v1/sessions",
    opt={"scope": "read"},
    tags=["sessions"],
    summary="Charging sessions, newest first, optionally of one vehicle or charger, overlapping [from, to)",
    description="Each session's `energyKwh` is the AC its connector's meter drew over (start, stop] by the "
    "counter rules (up to now while it runs); `dcKwh` and `efficiency` are there when the vehicle sent DC "
    "readings meanwhile.",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 503: DATABASE_DOWN}),
)
async def list_sessions(
    services: ServicesDep,
    vehicleId: Text = None,
    chargerId: Text = None,
    from_: Annotated[
        str | None, QueryParameter(name="from", format="date-time", description="RFC 3339 with `Z` or an offset")
    ] = None,
    to: Annotated[str | None, QueryParameter(format="date-time", description="RFC 3339 with `Z` or an offset")] = None,
    cursor: Text = None,
    limit: Limit = 50,
) -> SessionPage:
    if chargerId is not None:
        check_charger_id(chargerId, "chargerId")
    return await service.page(
        services.pool,
        vehicle_id=parse_device_id("vehicleId", vehicleId),
        charger_id=chargerId,
        start=parse_instant("from", from_) if from_ is not None else None,
        end=parse_instant("to", to) if to is not None else None,
        cursor=cursor,
        limit=limit,
        raw_retention_days=services.settings.raw_retention_days,
    )


@get(
    "/v1/sessions/{sessionId:int}",
    opt={"scope": "read"},
    tags=["sessions"],
    summary="A charging session: charger, connector, idTag, vehicle, start and stop, energy and efficiency",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No session has this id", 503: DATABASE_DOWN}),
)
async def get_session(services: ServicesDep, sessionId: SessionIdPath) -> Session:
    return await service.get(services.pool, sessionId, services.settings.raw_retention_days)
