"""SQL reads of `meter_live_status` and `vehicle_live_status`."""

from __future__ import annotations

from datetime import datetime

from energy_ingest.db.pool import Pool
from energy_ingest.telemetry.readings import MeterReading, VehicleReading


class MeterLive(MeterReading, kw_only=True):
    received_at: datetime


class VehicleLive(VehicleReading, kw_only=True):
    received_at: datetime


def _f4(value: float) -> float:
    """Values stored as `real` come back with float noise; 7 significant digits is what they hold."""
    return float(f"{value:.7g}")


async def meter(pool: Pool, meter_id: str) -> MeterLive | None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT l.ts, l.received_at, l.kwh_consumed_ac, l.voltage"
            " FROM meter_live_status l JOIN meters m USING (meter_key) WHERE m.meter_id = %s",
            [meter_id],
        )
        row = await cur.fetchone()
    if row is None:
        return None
    ts, received_at, kwh, voltage = row
    return MeterLive(
        meter_id=meter_id, kwh_consumed_ac=kwh, voltage=_f4(voltage), timestamp=ts, received_at=received_at
    )


async def vehicle(pool: Pool, vehicle_id: str) -> VehicleLive | None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT l.ts, l.received_at, l.kwh_delivered_dc, l.soc, l.battery_temp"
            " FROM vehicle_live_status l JOIN vehicles v USING (vehicle_key) WHERE v.vehicle_id = %s",
            [vehicle_id],
        )
        row = await cur.fetchone()
    if row is None:
        return None
    ts, received_at, kwh, soc, temp = row
    return VehicleLive(
        vehicle_id=vehicle_id,
        kwh_delivered_dc=kwh,
        soc=_f4(soc),
        battery_temp=_f4(temp),
        timestamp=ts,
        received_at=received_at,
    )


async def meters(pool: Pool, limit: int, after: str | None, silent_since: datetime | None) -> list[MeterLive]:
    """Meters by id after `after`; with `silent_since`, only those whose newest reading is older."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT m.meter_id, l.ts, l.received_at, l.kwh_consumed_ac, l.voltage"
            " FROM meters m JOIN meter_live_status l USING (meter_key)"
            " WHERE m.meter_id > %(after)s AND (%(since)s::timestamptz IS NULL OR l.ts < %(since)s)"
            " ORDER BY m.meter_id LIMIT %(limit)s",
            {"after": after or "", "since": silent_since, "limit": limit},
        )
        rows = await cur.fetchall()
    return [
        MeterLive(meter_id=i, kwh_consumed_ac=kwh, voltage=_f4(v), timestamp=ts, received_at=at)
        for i, ts, at, kwh, v in rows
    ]


async def vehicles(pool: Pool, limit: int, after: str | None, silent_since: datetime | None) -> list[VehicleLive]:
    """Vehicles by id after `after`; with `silent_since`, only those whose newest reading is older."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT v.vehicle_id, l.ts, l.received_at, l.kwh_delivered_dc, l.soc, l.battery_temp"
            " FROM vehicles v JOIN vehicle_live_status l USING (vehicle_key)"
            " WHERE v.vehicle_id > %(after)s AND (%(since)s::timestamptz IS NULL OR l.ts < %(since)s)"
            " ORDER BY v.vehicle_id LIMIT %(limit)s",
            {"after": after or "", "since": silent_since, "limit": limit},
        )
        rows = await cur.fetchall()
    return [
        VehicleLive(
            vehicle_id=i, kwh_delivered_dc=kwh, soc=_f4(soc), battery_temp=_f4(temp), timestamp=ts, received_at=at
        )
        for i, ts, at, kwh, soc, temp in rows
    ]
