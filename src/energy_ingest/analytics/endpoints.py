"""GET /v1/analytics/performance/{vehicleId}, /v1/analytics/meters/{meterId}, /v1/analytics/fleet."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from litestar import get
from litestar.params import QueryParameter

from energy_ingest.alerts import service as alerts
from energy_ingest.analytics import fleet, service
from energy_ingest.analytics.fleet import FleetReport
from energy_ingest.analytics.service import MeterReport, PerformanceReport, Window
from energy_ingest.http.context import Services, ServicesDep
from energy_ingest.http.openapi import BAD_PARAMETERS, DATABASE_DOWN, ProblemOperation, problems
from energy_ingest.http.params import MeterIdPath, VehicleIdPath, parse_finite, parse_instant

From = Annotated[
    str | None,
    QueryParameter(
        name="from", format="date-time", description="Window start, RFC 3339 with `Z` or an offset (inclusive)"
    ),
]
To = Annotated[
    str | None, QueryParameter(format="date-time", description="Window end, RFC 3339 with `Z` or an offset (exclusive)")
]
BucketParam = Annotated[
    Literal["15m", "1h", "1d"] | None,
    QueryParameter(description="Also return a `series` of per-bucket figures, for charts"),
]
Tz = Annotated[str, QueryParameter(description="IANA time zone that `1d` buckets follow (default UTC)")]


def _window(services: Services, from_: str | None, to: str | None, bucket: str | None, tz: str) -> Window:
    return service.resolve_window(
        parse_instant("from", from_) if from_ is not None else None,  # `?from=` is a bad timestamp, not none
        parse_instant("to", to) if to is not None else None,
        datetime.now(UTC),
        bucket=bucket,
        tz=tz,
        raw_retention_days=services.settings.raw_retention_days,
    )


_WINDOW_ERRORS = {
    400: BAD_PARAMETERS + " (a window longer than 31 days, `from` not before `to`, an unknown `tz`, …)",
    503: DATABASE_DOWN,
}


@get(
    "/v1/analytics/performance/{vehicleId:str}",
    opt={"scope": "read"},
    tags=["analytics"],
    summary="A vehicle's energy totals and charging efficiency over a window (default: the last 24 hours)",
    operation_class=ProblemOperation,
    responses=problems({**_WINDOW_ERRORS, 404: "The vehicle has sent no reading and has no meter link"}),
)
async def vehicle_performance(
    services: ServicesDep,
    vehicleId: VehicleIdPath,
    from_: From = None,
    to: To = None,
    bucket: BucketParam = None,
    tz: Tz = "UTC",
) -> PerformanceReport:
    window = _window(services, from_, to, bucket, tz)
    report = await service.performance(services.read_pool, vehicleId, window, services.settings.efficiency_threshold)
    report.open_alerts = (await alerts.open_alert_links(services.pool, "vehicle", [vehicleId])).get(
        vehicleId, msgspec.UNSET
    )
    return report


@get(
    "/v1/analytics/meters/{meterId:str}",
    opt={"scope": "read"},
    tags=["analytics"],
    summary="A meter's energy and voltage over a window (default: the last 24 hours)",
    operation_class=ProblemOperation,
    responses=problems({**_WINDOW_ERRORS, 404: "The meter has sent no reading"}),
)
async def meter_analytics(
    services: ServicesDep,
    meterId: MeterIdPath,
    from_: From = None,
    to: To = None,
    bucket: BucketParam = None,
    tz: Tz = "UTC",
) -> MeterReport:
    return await service.meter_report(services.read_pool, meterId, _window(services, from_, to, bucket, tz))


@get(
    "/v1/analytics/fleet",
    opt={"scope": "read"},
    tags=["analytics"],
    summary="Every vehicle's totals and efficiency over a window, worst first (default: the last 24 complete hours)",
    operation_class=ProblemOperation,
    responses=problems(
        {
            **_WINDOW_ERRORS,
            400: BAD_PARAMETERS + " (a bad window, `limit` out of 1–1000, a `cursor` not given out here)",
        }
    ),
)
async def fleet_report(
    services: ServicesDep,
    from_: From = None,
    to: To = None,
    below: Annotated[float | None, QueryParameter(description="Alert threshold (default EFFICIENCY_THRESHOLD)")] = None,
    min_ac_kwh: Annotated[
        float, QueryParameter(name="minAcKwh", ge=0, description="Less AC than this: insufficientData, not judged")
    ] = 1.0,
    limit: Annotated[int, QueryParameter(ge=1, le=fleet.MAX_LIMIT, description="Vehicles per page, 1–1000")] = 100,
    cursor: Annotated[str | None, QueryParameter(description="`nextCursor` of the previous page")] = None,
) -> FleetReport:
    start, end = fleet.default_window(datetime.now(UTC))
    window = service.resolve_window(
        parse_instant("from", from_) if from_ is not None else (start if to is None else None),
        parse_instant("to", to) if to is not None else end,
        datetime.now(UTC),
        raw_retention_days=services.settings.raw_retention_days,
    )
    below = parse_finite("below", below)
    threshold = services.settings.efficiency_threshold if below is None else below
    min_ac = parse_finite("minAcKwh", min_ac_kwh)
    assert min_ac is not None
    report = await fleet.report(services.read_pool, window, threshold, min_ac, limit, cursor)
    links = await alerts.open_alert_links(services.pool, "vehicle", [v.vehicle_id for v in report.vehicles])
    for vehicle in report.vehicles:
        vehicle.open_alerts = links.get(vehicle.vehicle_id, msgspec.UNSET)
    return report
