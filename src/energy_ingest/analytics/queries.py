"""Analytics SQL. Every query bounds `ts` by the window with constants, so the planner
prunes to the window's daily partitions, and reads them through the (device, ts) key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from energy_ingest.db.pool import Conn

VEHICLE_KNOWN = """
SELECT EXISTS (SELECT 1 FROM vehicle_live_status JOIN vehicles USING (vehicle_key) WHERE vehicle_id = %(vehicle)s)
    OR EXISTS (SELECT 1 FROM vehicle_meter_links WHERE vehicle_id = %(vehicle)s)
"""

VEHICLE_TOTALS = """
SELECT count(*), coalesce(sum(r.kwh_delivered_dc), 0), avg(r.battery_temp)
FROM vehicle_readings r
WHERE r.vehicle_key = (SELECT vehicle_key FROM vehicles WHERE vehicle_id = %(vehicle)s)
  AND r.ts >= %(from)s AND r.ts < %(to)s
"""

# Each linked meter's energy, counted only over the part of the window its link covered.
LINKED_METER_TOTALS = """
SELECT l.meter_id, sum(s.n)::bigint, coalesce(sum(s.kwh), 0)
FROM vehicle_meter_links l
LEFT JOIN meters m ON m.meter_id = l.meter_id
CROSS JOIN LATERAL (
    SELECT count(*) AS n, sum(r.kwh_consumed_ac) AS kwh
    FROM meter_readings r
    WHERE r.meter_key = m.meter_key
      AND r.ts >= %(from)s AND r.ts < %(to)s
      AND r.ts >= l.valid_from AND (l.valid_to IS NULL OR r.ts < l.valid_to)
) s
WHERE l.vehicle_id = %(vehicle)s
  AND l.valid_from < %(to)s AND (l.valid_to IS NULL OR l.valid_to > %(from)s)
GROUP BY l.meter_id
ORDER BY min(l.valid_from)
"""


@dataclass(frozen=True, slots=True)
class VehicleTotals:
    readings: int
    kwh_dc: float
    avg_battery_temp: float | None


@dataclass(frozen=True, slots=True)
class MeterTotals:
    meter_id: str
    readings: int
    kwh_ac: float


def window_params(vehicle_id: str, start: datetime, end: datetime) -> dict[str, object]:
    return {"vehicle": vehicle_id, "from": start, "to": end}


async def vehicle_known(conn: Conn, vehicle_id: str) -> bool:
    cur = await conn.execute(VEHICLE_KNOWN, {"vehicle": vehicle_id})
    row = await cur.fetchone()
    return bool(row and row[0])


async def vehicle_totals(conn: Conn, vehicle_id: str, start: datetime, end: datetime) -> VehicleTotals:
    cur = await conn.execute(VEHICLE_TOTALS, window_params(vehicle_id, start, end))
    row = await cur.fetchone()
    assert row is not None
    return VehicleTotals(row[0], float(row[1]), None if row[2] is None else float(row[2]))


async def linked_meter_totals(conn: Conn, vehicle_id: str, start: datetime, end: datetime) -> list[MeterTotals]:
    cur = await conn.execute(LINKED_METER_TOTALS, window_params(vehicle_id, start, end))
    return [MeterTotals(meter_id, n, float(kwh)) for meter_id, n, kwh in await cur.fetchall()]
