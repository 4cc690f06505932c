"""GET /v1/alerts, GET /v1/alerts/{alertId}, POST /v1/alerts/{alertId}/ack, POST /v1/alerts/evaluate, and each
device's alert settings: PUT/GET /v1/vehicles/{vehicleId}/alert-settings and /v1/meters/{meterId}/alert-settings."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, get, post, put
from litestar.params import Body, JSONBody, PathParameter, QueryParameter

from energy_ingest.alerts import evaluator, service
from energy_ingest.alerts.evaluator import RoundSummary
from energy_ingest.alerts.service import (
    MAX_LIMIT,
    MAX_NOTE,
    Alert,
    AlertPage,
    DeviceKind,
    MeterAlertSettings,
    Rule,
    StatusFilter,
    VehicleAlertSettings,
)
from energy_ingest.http.auth import principal_of
from energy_ingest.http.context import Services, ServicesDep
from energy_ingest.http.openapi import BAD_PARAMETERS, BODY_ERRORS, DATABASE_DOWN, ProblemOperation, problems
from energy_ingest.http.params import MeterIdPath, VehicleIdPath, parse_device_id, parse_instant

AlertIdPath = Annotated[int, PathParameter(ge=1, le=2**63 - 1, description="The alert's id")]
Instant = Annotated[str | None, QueryParameter(format="date-time", description="RFC 3339 with `Z` or an offset")]

Threshold = Annotated[float, msgspec.Meta(gt=0, le=1.5, description="Efficiency below this raises low_efficiency")]
MinAcKwh = Annotated[float, msgspec.Meta(ge=0, le=1e6, description="Less AC in the window is not judged")]
OfflineAfter = Annotated[
    str, msgspec.Meta(max_length=16, description="A duration such as 90s, 10m, 2h or 1d (1s to 3650d)")
]


class AckRequest(msgspec.Struct, forbid_unknown_fields=True):
    note: Annotated[str, msgspec.Meta(max_length=MAX_NOTE)] | None = None


class VehicleSettingsRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    threshold: Threshold | None = None
    min_ac_kwh: MinAcKwh | None = None
    offline_after: OfflineAfter | None = None


class MeterSettingsRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    offline_after: OfflineAfter | None = None


def _wake(services: Services, deliveries: int) -> None:
    if deliveries and services.deliveries is not None:
        services.deliveries.wake()


@get(
    "/v1/alerts",
    opt={"scope": "read"},
    tags=["alerts"],
    summary="Alerts, newest first: by status (`open`: active or acknowledged), rule, device, raised in [from, to)",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 503: DATABASE_DOWN}),
)
async def list_alerts(
    services: ServicesDep,
    status: Annotated[StatusFilter | None, QueryParameter(description="`open`: active or acknowledged")] = None,
    rule: Annotated[Rule | None, QueryParameter(description="The rule that raised it")] = None,
    deviceKind: Annotated[DeviceKind | None, QueryParameter(description="meter or vehicle")] = None,
    deviceId: Annotated[str | None, QueryParameter(description="A meter's or a vehicle's id")] = None,
    from_: Annotated[
        str | None, QueryParameter(name="from", format="date-time", description="Raised at or after, RFC 3339")
    ] = None,
    to: Annotated[str | None, QueryParameter(format="date-time", description="Raised before, RFC 3339")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Alerts per page, 1–500")] = 100,
    cursor: Annotated[str | None, QueryParameter(description="`nextCursor` of the previous page")] = None,
) -> AlertPage:
    return await service.page(
        services.pool,
        status=status,
        rule=rule,
        device_kind=deviceKind,
        device_id=parse_device_id("deviceId", deviceId),
        start=parse_instant("from", from_) if from_ is not None else None,
        end=parse_instant("to", to) if to is not None else None,
        cursor=cursor,
        limit=limit,
    )


@get(
    "/v1/alerts/{alertId:int}",
    opt={"scope": "read"},
    tags=["alerts"],
    summary="An alert: its rule, device, status, times and what the rule saw",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No alert has this id", 503: DATABASE_DOWN}),
)
async def get_alert(services: ServicesDep, alertId: AlertIdPath) -> Alert:
    return await service.get(services.pool, alertId)


@post(
    "/v1/alerts/{alertId:int}/ack",
    tags=["alerts"],
    summary="Acknowledge an active alert in the name of the request's key, with an optional note",
    description='The body is optional: `{"note": "…"}` (at most 1000 characters). Webhooks that want '
    "`alert.acknowledged` are told. The alert still clears by itself when its condition ends.",
    status_code=200,
    operation_class=ProblemOperation,
    responses=problems(
        {
            400: BAD_PARAMETERS + ', or a body that is not `{"note": …}`',
            404: "No alert has this id",
            409: "The alert is acknowledged already, or cleared",
            503: DATABASE_DOWN,
        }
        | BODY_ERRORS
    ),
)
async def acknowledge_alert(
    services: ServicesDep,
    request: Request[Any, Any, Any],
    alertId: AlertIdPath,
    data: Annotated[AckRequest | None, Body(description="Optional: a note")] = None,
) -> Alert:
    note = data.note if data is not None else None
    alert, deliveries = await service.acknowledge(services.pool, alertId, principal_of(request.scope).name, note)
    _wake(services, deliveries)
    return alert


@post(
    "/v1/alerts/evaluate",
    tags=["alerts"],
    summary="Evaluate every rule now (after a round another worker is in), rather than at the next interval",
    status_code=200,
    operation_class=ProblemOperation,
    responses=problems({503: DATABASE_DOWN} | BODY_ERRORS),
)
async def evaluate_alerts(services: ServicesDep) -> RoundSummary:
    summary = await evaluator.run_round(services.pool, services.settings, wait=True)
    assert summary is not None  # waited for the lock
    _wake(services, summary.deliveries)
    return summary


_SETTINGS_ERRORS = problems(
    {
        400: "An invalid device id, or a body with an unknown field, a threshold outside (0, 1.5], a negative "
        "minAcKwh, an offlineAfter that is no duration",
        503: DATABASE_DOWN,
    }
    | BODY_ERRORS
)


@get(
    "/v1/vehicles/{vehicleId:str}/alert-settings",
    opt={"scope": "read"},
    tags=["alerts"],
    summary="A vehicle's own alert settings (null: the default) and those in effect",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 503: DATABASE_DOWN}),
)
async def get_vehicle_settings(services: ServicesDep, vehicleId: VehicleIdPath) -> VehicleAlertSettings:
    return await service.vehicle_settings(services.pool, services.settings, vehicleId)


@put(
    "/v1/vehicles/{vehicleId:str}/alert-settings",
    tags=["alerts"],
    summary="Set a vehicle's own threshold, minAcKwh and offlineAfter (null or left out: the default)",
    operation_class=ProblemOperation,
    responses=_SETTINGS_ERRORS,
)
async def put_vehicle_settings(
    services: ServicesDep, vehicleId: VehicleIdPath, data: JSONBody[VehicleSettingsRequest]
) -> VehicleAlertSettings:
    return await service.put_vehicle_settings(
        services.pool, services.settings, vehicleId, data.threshold, data.min_ac_kwh, data.offline_after
    )


@get(
    "/v1/meters/{meterId:str}/alert-settings",
    opt={"scope": "read"},
    tags=["alerts"],
    summary="A meter's own offlineAfter (null: the default) and the one in effect",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 503: DATABASE_DOWN}),
)
async def get_meter_settings(services: ServicesDep, meterId: MeterIdPath) -> MeterAlertSettings:
    return await service.meter_settings(services.pool, services.settings, meterId)


@put(
    "/v1/meters/{meterId:str}/alert-settings",
    tags=["alerts"],
    summary="Set a meter's own offlineAfter (null or left out: the default)",
    operation_class=ProblemOperation,
    responses=_SETTINGS_ERRORS,
)
async def put_meter_settings(
    services: ServicesDep, meterId: MeterIdPath, data: JSONBody[MeterSettingsRequest]
) -> MeterAlertSettings:
    return await service.put_meter_settings(services.pool, services.settings, meterId, data.offline_after)
