"""Write SQL: cold insert with dedupe and hot upsert (owns the reading and live-status tables' writes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from energy_ingest.db.pool import Conn

INSERT_METER_READINGS = """
INSERT INTO meter_readings (meter_key, ts, received_at, kwh_consumed_ac, voltage)
SELECT * FROM unnest(%s::int4[], %s::timestamptz[], %s::timestamptz[], %s::float8[], %s::float4[])
ON CONFLICT DO NOTHING
RETURNING meter_key, ts
"""

INSERT_VEHICLE_READINGS = """
INSERT INTO vehicle_readings (vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp)
SELECT * FROM unnest(%s::int4[], %s::timestamptz[], %s::timestamptz[], %s::float8[], %s::float4[], %s::float4[])
ON CONFLICT DO NOTHING
RETURNING vehicle_key, ts
"""

# An older or equal-time reading never replaces a newer one.
UPSERT_METER_LIVE = """
INSERT INTO meter_live_status AS s (meter_id, ts, received_at, kwh_consumed_ac, voltage)
SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::float8[], %s::float4[])
ON CONFLICT (meter_id) DO UPDATE
SET ts = EXCLUDED.ts, received_at = EXCLUDED.received_at,
    kwh_consumed_ac = EXCLUDED.kwh_consumed_ac, voltage = EXCLUDED.voltage
WHERE s.ts < EXCLUDED.ts
"""

UPSERT_VEHICLE_LIVE = """
INSERT INTO vehicle_live_status AS s (vehicle_id, ts, received_at, kwh_delivered_dc, soc, battery_temp)
SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::float8[], %s::float4[], %s::float4[])
ON CONFLICT (vehicle_id) DO UPDATE
SET ts = EXCLUDED.ts, received_at = EXCLUDED.received_at, kwh_delivered_dc = EXCLUDED.kwh_delivered_dc,
    soc = EXCLUDED.soc, battery_temp = EXCLUDED.battery_temp
WHERE s.ts < EXCLUDED.ts
"""

Key = tuple[int, datetime]


async def insert_cold(conn: Conn, query: str, rows: list[tuple[Any, ...]]) -> set[Key]:
    """Insert rows (already sorted by key, ts); return the (key, ts) of those that were new."""
    if not rows:
        return set()
    cur = await conn.execute(query, [list(col) for col in zip(*rows, strict=True)])
    return {(key, ts) for key, ts in await cur.fetchall()}


async def upsert_hot(conn: Conn, query: str, rows: list[tuple[Any, ...]]) -> None:
    """Upsert one row per device (sorted by device id, so concurrent flushes lock in one order)."""
    if rows:
        await conn.execute(query, [list(col) for col in zip(*rows, strict=True)])
