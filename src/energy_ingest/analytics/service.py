"""Vehicle performance over a window: DC stored against the AC its linked meters drew."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from energy_ingest.analytics import queries
from energy_ingest.db.pool import Pool
from energy_ingest.problems import Problem

MAX_WINDOW = timedelta(days=31)
DEFAULT_WINDOW = timedelta(hours=24)


class ReadingCounts(msgspec.Struct):
    meter: int
    vehicle: int


class PerformanceReport(msgspec.Struct, rename="camel"):
    vehicle_id: str
    meter_ids: list[str]
    from_: datetime = msgspec.field(name="from")
    to: datetime
    total_ac: float
    total_dc: float
    efficiency: float | None
    avg_battery_temp: float | None
    efficiency_alert: bool
    readings: ReadingCounts


def resolve_window(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """`[from, to)`: `to` defaults to now, `from` to 24 h before `to`; at most 31 days."""
    end = end or now
    start = start or end - DEFAULT_WINDOW
    if start >= end:
        raise Problem(400, "`from` must be before `to`", errors=[{"field": "from", "reason": "not before `to`"}])
    if end - start > MAX_WINDOW:
        raise Problem(
            400,
            "the window may span at most 31 days",
            errors=[{"field": "from", "reason": "window longer than 31 days"}],
        )
    return start, end


def _kwh(value: float) -> float:
    # Sums of binary floats carry noise in the last digits; a microwatt-hour is far below any meter's resolution.
    return round(value, 6)


async def performance(
    pool: Pool, vehicle_id: str, start: datetime, end: datetime, threshold: float
) -> PerformanceReport:
    async with pool.connection() as conn:
        if not await queries.vehicle_known(conn, vehicle_id):
            raise Problem(404, f"vehicle {vehicle_id} is unknown: it has sent no reading and has no meter link")
        dc = await queries.vehicle_totals(conn, vehicle_id, start, end)
        ac = await queries.linked_meter_totals(conn, vehicle_id, start, end)
    total_ac = _kwh(sum(m.kwh_ac for m in ac))
    total_dc = _kwh(dc.kwh_dc)
    efficiency = round(total_dc / total_ac, 4) if total_ac > 0 else None
    return PerformanceReport(
        vehicle_id=vehicle_id,
        meter_ids=list(dict.fromkeys(m.meter_id for m in ac)),
        from_=start,
        to=end,
        total_ac=total_ac,
        total_dc=total_dc,
        efficiency=efficiency,
        avg_battery_temp=None if dc.avg_battery_temp is None else round(dc.avg_battery_temp, 3),
        efficiency_alert=efficiency is not None and efficiency < threshold,
        readings=ReadingCounts(meter=sum(m.readings for m in ac), vehicle=dc.readings),
    )
