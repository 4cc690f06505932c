"""SQL reads of `meter_live_status` and `vehicle_live_status`: one device, or a page of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from energy_ingest.db.pool import Pool
from energy_ingest.telemetry.readings import MeterReading, VehicleReading


class MeterLive(MeterReading, kw_only=True):
    received_at: datetime


class VehicleLive(VehicleReading, kw_only=True):
    received_at: datetime


_METERS = (
    "SELECT m.meter_id, l.ts, l.received_at, l.kwh_consumed_ac, l.voltage"
    " FROM meters m JOIN meter_live_status l USING (meter_key)"
)
_VEHICLES = (
    "SELECT v.vehicle_id, l.ts, l.received_at, l.kwh_delivered_dc, l.soc, l.battery_temp"
    " FROM vehicles v JOIN vehicle_live_status l USING (vehicle_key)"
)
# A page: ids after the cursor; with `since`, only devices whose newest reading is older.
_PAGE = " WHERE {id} > %(after)s AND (%(since)s::timestamptz IS NULL OR l.ts < %(since)s) ORDER BY {id} LIMIT %(limit)s"


def _f4(value: float) -> float:
    """Values stored as `real` come back with float noise; 7 significant digits is what they hold."""
    return float(f"{value:.7g}")


def _meter(row: tuple[Any, ...]) -> MeterLive:
    meter_id, ts, received_at, kwh, voltage = row
    return MeterLive(
        meter_id=meter_id, kwh_consumed_ac=kwh, voltage=_f4(voltage), timestamp=ts, received_at=received_at
    )


def _vehicle(row: tuple[Any, ...]) -> VehicleLive:
    vehicle_id, ts, received_at, kwh, soc, temp = row
    return VehicleLive(
        vehicle_id=vehicle_id,
        kwh_delivered_dc=kwh,
        soc=_f4(soc),
        battery_temp=_f4(temp),
        timestamp=ts,
        received_at=received_at,
    )


async def _rows(pool: Pool, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def meter(pool: Pool, meter_id: str) -> MeterLive | None:
    rows = await _rows(pool, _METERS + " WHERE m.meter_id = %(id)s", {"id": meter_id})
    return _meter(rows[0]) if rows else None


async def vehicle(pool: Pool, vehicle_id: str) -> VehicleLive | None:
    rows = await _rows(pool, _VEHICLES + " WHERE v.vehicle_id = %(id)s", {"id": vehicle_id})
    return _vehicle(rows[0]) if rows else None


async def meters(pool: Pool, limit: int, after: str | None, silent_since: datetime | None) -> list[MeterLive]:
    params = {"after": after or "", "since": silent_since, "limit": limit}
    return [_meter(row) for row in await _rows(pool, _METERS + _PAGE.format(id="m.meter_id"), params)]


async def vehicles(pool: Pool, limit: int, after: str | None, silent_since: datetime | None) -> list[VehicleLive]:
    params = {"after": after or "", "since": silent_since, "limit": limit}
    return [_vehicle(row) for row in await _rows(pool, _VEHICLES + _PAGE.format(id="v.vehicle_id"), params)]
