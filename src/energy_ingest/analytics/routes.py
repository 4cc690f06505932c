"""GET /v1/analytics/performance/{vehicleId}."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar import get
from litestar.params import QueryParameter

from energy_ingest.analytics import service
from energy_ingest.analytics.service import PerformanceReport
from energy_ingest.params import VehicleIdPath, parse_instant
from energy_ingest.services import ServicesDep


@get(
    "/v1/analytics/performance/{vehicleId:str}",
    tags=["analytics"],
    summary="A vehicle's energy totals and charging efficiency over a window (default: the last 24 hours)",
)
async def vehicle_performance(
    services: ServicesDep,
    vehicleId: VehicleIdPath,
    from_: Annotated[str | None, QueryParameter(name="from", description="Window start, RFC 3339 (inclusive)")] = None,
    to: Annotated[str | None, QueryParameter(description="Window end, RFC 3339 (exclusive)")] = None,
) -> PerformanceReport:
    start, end = service.resolve_window(
        parse_instant("from", from_) if from_ else None,
        parse_instant("to", to) if to else None,
        datetime.now(UTC),
    )
    return await service.performance(services.pool, vehicleId, start, end, services.settings.efficiency_threshold)
