"""The fleet efficiency report: every vehicle over a window, worst first, with cursor pagination."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Literal

import msgspec

from energy_ingest.analytics import repository
from energy_ingest.analytics.repository import NO_EFFICIENCY, FleetCursor, FleetRow
from energy_ingest.analytics.service import ReadingCounts, Resolution, Window, mean, round_kwh, shown
from energy_ingest.analytics.windows import HOUR, floor_hour, merge
from energy_ingest.db.pool import Conn, Pool
from energy_ingest.errors import InvalidInput, check_limit
from energy_ingest.readings.model import DEVICE_ID_PATTERN

Status = Literal["alert", "ok", "insufficientData"]
MAX_LIMIT = 1000
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


class FleetVehicle(msgspec.Struct, rename="camel"):
    vehicle_id: str
    meter_ids: list[str]
    total_ac: float
    total_dc: float
    efficiency: float | None
    avg_battery_temp: float | None
    status: Status
    readings: ReadingCounts
    excluded_ac: float | msgspec.UnsetType = msgspec.UNSET  # implausible register rises left out (when any)
    excluded_dc: float | msgspec.UnsetType = msgspec.UNSET
    # GET /v1/alerts for the vehicle's open alerts, when it has any
    open_alerts: str | msgspec.UnsetType = msgspec.UNSET


class FleetReport(msgspec.Struct, rename="camel"):
    from_: datetime = msgspec.field(name="from")
    to: datetime
    below: float
    min_ac_kwh: float
    total: int
    vehicles: list[FleetVehicle]
    next_cursor: str | None
    resolution: Resolution = "reading"


def default_window(now: datetime) -> tuple[datetime, datetime]:
    """The last 24 complete UTC hours: final figures, answered from rollups alone."""
    end = floor_hour(now)
    return end - 24 * HOUR, end


def encode_cursor(row: FleetRow) -> str:
    raw = msgspec.json.encode([int(row.insufficient), str(row.sort_efficiency), row.vehicle_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> FleetCursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        insufficient, efficiency, vehicle_id = msgspec.json.decode(raw, type=tuple[int, str, str])
        sort_efficiency = Decimal(efficiency)
        # Only what this service hands out: a 0/1 flag, an efficiency to 4 places (or the sentinel), a device id.
        valid_efficiency = sort_efficiency == NO_EFFICIENCY or (
            sort_efficiency.is_finite() and 0 <= sort_efficiency < 1000 and sort_efficiency == round(sort_efficiency, 4)
        )
        if insufficient not in (0, 1) or not valid_efficiency or not _DEVICE_ID.match(vehicle_id):
            raise ValueError(text)
        return FleetCursor(insufficient, sort_efficiency, vehicle_id)
    except (ValueError, TypeError, binascii.Error, InvalidOperation, msgspec.DecodeError):
        raise InvalidInput(
            "`cursor` is not one this service gave out", errors=[{"field": "cursor", "reason": "malformed"}]
        ) from None


async def fleet_plan(
    conn: Conn, window: Window, min_ac_kwh: float, after: FleetCursor | None, limit: int
) -> repository.Statement:
    whole = window.cover()
    # Hours a link change cuts in two must come from readings, for the meters involved.
    boundaries = await repository.link_boundaries(conn, whole.lo, whole.hi)
    cut_hours = [(floor_hour(b), floor_hour(b) + HOUR) for b in boundaries]
    ac_raw = whole.raw + [h for h in cut_hours if h[0] >= window.raw_from]
    return repository.fleet_statement(whole, merge(ac_raw), min_ac_kwh, after, limit)


async def report(
    pool: Pool, window: Window, below: float, min_ac_kwh: float, limit: int, cursor: str | None
) -> FleetReport:
    check_limit(limit, MAX_LIMIT)
    if min_ac_kwh < 0:
        raise InvalidInput("`minAcKwh` must be ≥ 0", errors=[{"field": "minAcKwh", "reason": "negative"}])
    after = decode_cursor(cursor) if cursor else None
    whole = window.cover()
    async with pool.connection() as conn:
        total, rows = await repository.fleet_rows(conn, await fleet_plan(conn, window, min_ac_kwh, after, limit))
    vehicles = [_vehicle(row, below) for row in rows]
    return FleetReport(
        from_=whole.lo,
        to=whole.hi,
        below=below,
        min_ac_kwh=min_ac_kwh,
        total=total,
        vehicles=vehicles,
        next_cursor=encode_cursor(rows[-1]) if len(rows) == limit else None,
        resolution="hour" if whole.widened else "reading",
    )


def _vehicle(row: FleetRow, below: float) -> FleetVehicle:
    efficiency = None if row.efficiency is None else float(row.efficiency)
    status: Status
    if row.insufficient:
        status = "insufficientData"
    elif efficiency is not None and efficiency < below:
        status = "alert"
    else:
        status = "ok"
    return FleetVehicle(
        vehicle_id=row.vehicle_id,
        meter_ids=row.meter_ids,
        total_ac=round_kwh(row.ac_kwh),
        total_dc=round_kwh(row.dc_kwh),
        efficiency=efficiency,
        avg_battery_temp=mean(row.temp_sum or Decimal(0), row.temp_readings),
        status=status,
        readings=ReadingCounts(meter=row.ac_readings, vehicle=row.dc_readings),
        excluded_ac=shown(row.ac_excluded),
        excluded_dc=shown(row.dc_excluded),
    )
