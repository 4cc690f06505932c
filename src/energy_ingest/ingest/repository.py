"""Write SQL: rows are staged by binary COPY into a per-connection temporary table, then one
statement inserts them into the cold table (dedupe) and one upserts the hot store from them.
Owns the writes of the reading and live-status tables."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from energy_ingest.db.pool import Conn

Key = tuple[int, datetime]


@dataclass(frozen=True, slots=True)
class StreamSQL:
    """The statements of one kind of reading. `seq` is the reading's place in the flush."""

    create_stage: str
    copy: str
    copy_types: tuple[str, ...]
    insert_cold: str
    upsert_hot: str


METER_SQL = StreamSQL(
    create_stage="""
CREATE TEMP TABLE IF NOT EXISTS meter_stage (
    seq int4, meter_key int4, ts timestamptz, received_at timestamptz,
    kwh_consumed_ac float8, voltage float4
) ON COMMIT DELETE ROWS""",
    copy="COPY meter_stage (seq, meter_key, ts, received_at, kwh_consumed_ac, voltage) FROM STDIN (FORMAT BINARY)",
    copy_types=("int4", "int4", "timestamptz", "timestamptz", "float8", "float4"),
    # Sorted so concurrent flushes take index locks in one order; of equal keys the first sent wins.
    insert_cold="""
INSERT INTO meter_readings (meter_key, ts, received_at, kwh_consumed_ac, voltage)
SELECT meter_key, ts, received_at, kwh_consumed_ac, voltage FROM meter_stage
ORDER BY meter_key, ts, seq
ON CONFLICT DO NOTHING
RETURNING meter_key, ts""",
    # The newest reading per device; an older or equal-time one never replaces what is stored.
    upsert_hot="""
INSERT INTO meter_live_status AS l (meter_key, ts, received_at, kwh_consumed_ac, voltage)
SELECT DISTINCT ON (meter_key) meter_key, ts, received_at, kwh_consumed_ac, voltage FROM meter_stage
ORDER BY meter_key, ts DESC, seq
ON CONFLICT (meter_key) DO UPDATE
SET ts = EXCLUDED.ts, received_at = EXCLUDED.received_at,
    kwh_consumed_ac = EXCLUDED.kwh_consumed_ac, voltage = EXCLUDED.voltage
WHERE l.ts < EXCLUDED.ts""",
)

VEHICLE_SQL = StreamSQL(
    create_stage="""
CREATE TEMP TABLE IF NOT EXISTS vehicle_stage (
    seq int4, vehicle_key int4, ts timestamptz, received_at timestamptz,
    kwh_delivered_dc float8, soc float4, battery_temp float4
) ON COMMIT DELETE ROWS""",
    copy="COPY vehicle_stage (seq, vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp)"
    " FROM STDIN (FORMAT BINARY)",
    copy_types=("int4", "int4", "timestamptz", "timestamptz", "float8", "float4", "float4"),
    insert_cold="""
INSERT INTO vehicle_readings (vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp)
SELECT vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp FROM vehicle_stage
ORDER BY vehicle_key, ts, seq
ON CONFLICT DO NOTHING
RETURNING vehicle_key, ts""",
    upsert_hot="""
INSERT INTO vehicle_live_status AS l (vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp)
SELECT DISTINCT ON (vehicle_key) vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp
FROM vehicle_stage
ORDER BY vehicle_key, ts DESC, seq
ON CONFLICT (vehicle_key) DO UPDATE
SET ts = EXCLUDED.ts, received_at = EXCLUDED.received_at, kwh_delivered_dc = EXCLUDED.kwh_delivered_dc,
    soc = EXCLUDED.soc, battery_temp = EXCLUDED.battery_temp
WHERE l.ts < EXCLUDED.ts""",
)


async def prepare_connection(conn: Conn) -> None:
    """Create this connection's staging tables (temporary: private to it, emptied at each commit)."""
    for stream in (METER_SQL, VEHICLE_SQL):
        await conn.execute(stream.create_stage)


async def write(conn: Conn, stream: StreamSQL, rows: Iterable[tuple[Any, ...]]) -> set[Key]:
    """Stage rows, insert the new ones into the cold table and upsert the hot store.

    Runs inside the caller's transaction; returns the (key, ts) of the rows that were new.
    """
    async with conn.cursor() as cur:
        async with cur.copy(stream.copy) as copy:
            copy.set_types(list(stream.copy_types))
            for row in rows:
                await copy.write_row(row)
        await cur.execute(stream.insert_cold)
        inserted = {(key, ts) for key, ts in await cur.fetchall()}
        await cur.execute(stream.upsert_hot)
    return inserted
