"""Write SQL: insert new readings into the cold table (dedupe), add them to their hourly
rollups, and upsert the hot store.

Two ways in, chosen per flush by the writer, with the same statements in the same order:
- small flushes: rows passed as one JSON parameter per stream, the transaction sent as one
  pipeline (a single round trip);
- large flushes: binary COPY into a per-connection temporary staging table, then the
  statements read it, inside one transaction.
Owns the writes of the reading, rollup and live-status tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from psycopg import sql

from energy_ingest.db.pool import Conn

Key = tuple[int, datetime]
Keys = list[Key]  # the (device key, ts) of rows a write inserted


@dataclass(frozen=True, slots=True)
class StreamSQL:
    """The statements of one kind of reading; `{source}` is the staged rows (table or CTE)."""

    kind: str
    columns: tuple[tuple[str, str], ...]  # (name, type) of a staged row; `seq` orders a flush
    insert_cold: str  # returns the inserted rows; reads {source}
    rollup: str  # adds the inserted rows (CTE {cold}) to their hours
    upsert_hot: str  # reads {source}

    @property
    def key(self) -> str:
        return f"{self.kind}_key"

    def cold_ctes(self, source: str) -> str:
        """The cold insert and its rollup as two CTEs, `{kind}_cold` and `{kind}_roll`."""
        cold = f"{self.kind}_cold"
        return (
            f"{cold} AS ({self.insert_cold.format(source=source)}),\n"
            f"{self.kind}_roll AS ({self.rollup.format(cold=cold)})"
        )

    def insert_and_roll(self, source: str) -> str:
        """The cold insert and its rollup in one statement, returning the inserted (key, ts)."""
        return f"WITH {self.cold_ctes(source)} SELECT {self.key}, ts FROM {self.kind}_cold"

    @property
    def stage(self) -> str:
        return f"{self.kind}_stage"

    @property
    def create_stage(self) -> str:
        cols = ", ".join(f"{name} {type_}" for name, type_ in self.columns)
        return f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} ({cols}) ON COMMIT DELETE ROWS"

    @property
    def copy(self) -> str:
        return f"COPY {self.stage} ({', '.join(n for n, _ in self.columns)}) FROM STDIN (FORMAT BINARY)"

    @property
    def recordset(self) -> str:
        cols = ", ".join(f"{name} {type_}" for name, type_ in self.columns)
        return f"json_to_recordset(%s::json) AS r({cols})"


METER_SQL = StreamSQL(
    kind="meter",
    columns=(
        ("seq", "int4"),
        ("meter_key", "int4"),
        ("ts", "timestamptz"),
        ("received_at", "timestamptz"),
        ("kwh_consumed_ac", "float8"),
        ("voltage", "float4"),
    ),
    # Sorted so concurrent flushes take index locks in one order; of equal keys the first sent wins.
    insert_cold="""
INSERT INTO meter_readings (meter_key, ts, received_at, kwh_consumed_ac, voltage)
SELECT meter_key, ts, received_at, kwh_consumed_ac, voltage FROM {source}
ORDER BY meter_key, ts, seq
ON CONFLICT DO NOTHING
RETURNING meter_key, ts, kwh_consumed_ac, voltage""",
    rollup="""
INSERT INTO meter_hourly AS h (meter_key, hour, readings, kwh, voltage_sum, voltage_min, voltage_max)
SELECT meter_key, date_trunc('hour', ts, 'UTC'), count(*), sum(kwh_consumed_ac::numeric), sum(voltage::numeric),
       min(voltage), max(voltage)
FROM {cold} GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (meter_key, hour) DO UPDATE
SET readings = h.readings + EXCLUDED.readings, kwh = h.kwh + EXCLUDED.kwh,
    voltage_sum = h.voltage_sum + EXCLUDED.voltage_sum,
    voltage_min = least(h.voltage_min, EXCLUDED.voltage_min),
    voltage_max = greatest(h.voltage_max, EXCLUDED.voltage_max)""",
    # The newest reading per device; an older or equal-time one never replaces what is stored.
    upsert_hot="""
INSERT INTO meter_live_status AS l (meter_key, ts, received_at, kwh_consumed_ac, voltage)
SELECT DISTINCT ON (meter_key) meter_key, ts, received_at, kwh_consumed_ac, voltage FROM {source}
ORDER BY meter_key, ts DESC, seq
ON CONFLICT (meter_key) DO UPDATE
SET ts = EXCLUDED.ts, received_at = EXCLUDED.received_at,
    kwh_consumed_ac = EXCLUDED.kwh_consumed_ac, voltage = EXCLUDED.voltage
WHERE l.ts < EXCLUDED.ts""",
)

VEHICLE_SQL = StreamSQL(
    kind="vehicle",
    columns=(
        ("seq", "int4"),
        ("vehicle_key", "int4"),
        ("ts", "timestamptz"),
        ("received_at", "timestamptz"),
        ("kwh_delivered_dc", "float8"),
        ("soc", "float4"),
        ("battery_temp", "float4"),
    ),
    insert_cold="""
INSERT INTO vehicle_readings (vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp)
SELECT vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp FROM {source}
ORDER BY vehicle_key, ts, seq
ON CONFLICT DO NOTHING
RETURNING vehicle_key, ts, kwh_delivered_dc, soc, battery_temp""",
    # last_soc: the SoC of the hour's latest reading, even when an earlier one arrives later.
    rollup="""
INSERT INTO vehicle_hourly AS h (vehicle_key, hour, readings, kwh, temp_sum, temp_min, temp_max, last_ts, last_soc)
SELECT vehicle_key, date_trunc('hour', ts, 'UTC'), count(*), sum(kwh_delivered_dc::numeric),
       sum(battery_temp::numeric), min(battery_temp), max(battery_temp), max(ts), (array_agg(soc ORDER BY ts DESC))[1]
FROM {cold} GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (vehicle_key, hour) DO UPDATE
SET readings = h.readings + EXCLUDED.readings, kwh = h.kwh + EXCLUDED.kwh,
    temp_sum = h.temp_sum + EXCLUDED.temp_sum,
    temp_min = least(h.temp_min, EXCLUDED.temp_min), temp_max = greatest(h.temp_max, EXCLUDED.temp_max),
    last_soc = CASE WHEN EXCLUDED.last_ts > h.last_ts THEN EXCLUDED.last_soc ELSE h.last_soc END,
    last_ts = greatest(h.last_ts, EXCLUDED.last_ts)""",
    upsert_hot="""
INSERT INTO vehicle_live_status AS l (vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp)
SELECT DISTINCT ON (vehicle_key) vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp
FROM {source}
ORDER BY vehicle_key, ts DESC, seq
ON CONFLICT (vehicle_key) DO UPDATE
SET ts = EXCLUDED.ts, received_at = EXCLUDED.received_at, kwh_delivered_dc = EXCLUDED.kwh_delivered_dc,
    soc = EXCLUDED.soc, battery_temp = EXCLUDED.battery_temp
WHERE l.ts < EXCLUDED.ts""",
)

# The lock order of every write: streams in this order; within a stream the cold insert, then its
# rollup, then the hot upsert; within each table rows sorted by (device key, ts or hour). Two
# flushes that share rows therefore wait on each other in one direction only and cannot deadlock.
STREAMS = (METER_SQL, VEHICLE_SQL)


_encode = msgspec.json.Encoder().encode


async def write_inline(conn: Conn, rows: Sequence[list[tuple[Any, ...]]]) -> list[Keys]:
    """Write (meter rows, vehicle rows) in one transaction sent as one pipeline; return the new
    (key, ts) of each. Rows go as one JSON parameter per stream.

    Statements run in the one lock order every write path keeps (see `STREAMS`).
    """
    inserted: list[Keys] = [[], []]
    cursors = []
    async with conn.pipeline(), conn.transaction():
        for n, (stream, stream_rows) in enumerate(zip(STREAMS, rows, strict=True)):
            if not stream_rows:
                continue
            names = [name for name, _ in stream.columns]
            param = _encode([dict(zip(names, row, strict=True)) for row in stream_rows]).decode()
            cur = conn.cursor()
            await cur.execute(stream.insert_and_roll(stream.recordset), [param])
            await conn.execute(stream.upsert_hot.format(source=stream.recordset), [param])
            cursors.append((n, cur))
    for n, cur in cursors:
        inserted[n] = await cur.fetchall()
    return inserted


async def prepare_connection(conn: Conn) -> None:
    """Create this connection's staging tables (temporary: private to it, emptied at each commit)."""
    for stream in STREAMS:
        await conn.execute(stream.create_stage)


async def write_staged(conn: Conn, stream: StreamSQL, rows: Iterable[tuple[Any, ...]]) -> Keys:
    """Stage rows by binary COPY, then insert and upsert from the stage. Needs an open transaction."""
    async with conn.cursor() as cur:
        async with cur.copy(stream.copy) as copy:
            copy.set_types([type_ for _, type_ in stream.columns])
            for row in rows:
                await copy.write_row(row)
        await cur.execute(stream.insert_and_roll(stream.stage))
        inserted: Keys = await cur.fetchall()
        await cur.execute(stream.upsert_hot.format(source=stream.stage))
    return inserted


STREAM_OF = {stream.kind: stream for stream in STREAMS}


def _names(stream: StreamSQL) -> dict[str, sql.Composable]:
    values = [name for name, _ in stream.columns if name not in {"seq", stream.key}]
    return {
        "cold": sql.Identifier(f"{stream.kind}_readings"),
        "live": sql.Identifier(f"{stream.kind}_live_status"),
        "key": sql.Identifier(stream.key),
        "values": sql.SQL(", ").join(sql.Identifier(v) for v in values),
        "energy": sql.Identifier(values[2]),  # after ts and received_at: the kind's energy column
    }


async def delete_cold(conn: Conn, kind: str, key: int, lo: datetime, hi: datetime) -> tuple[list[datetime], float]:
    """Delete one device's readings in [lo, hi); return their times and their energy. In a transaction."""
    names = _names(STREAM_OF[kind])
    cur = await conn.execute(
        sql.SQL("DELETE FROM {cold} WHERE {key} = %s AND ts >= %s AND ts < %s RETURNING ts, {energy}").format(**names),
        [key, lo, hi],
    )
    rows = await cur.fetchall()
    return [ts for ts, _ in rows], sum(energy for _, energy in rows)


async def restore_live(conn: Conn, kind: str, key: int, lo: datetime, hi: datetime) -> None:
    """If the device's live row came from [lo, hi), replace it by its newest remaining reading (or drop it)."""
    names = _names(STREAM_OF[kind])
    cur = await conn.execute(
        sql.SQL("SELECT 1 FROM {live} WHERE {key} = %s AND ts >= %s AND ts < %s FOR UPDATE").format(**names),
        [key, lo, hi],
    )
    if await cur.fetchone() is None:
        return
    await conn.execute(sql.SQL("DELETE FROM {live} WHERE {key} = %s").format(**names), [key])
    await conn.execute(
        sql.SQL(
            "INSERT INTO {live} ({key}, {values})"
            " SELECT {key}, {values} FROM {cold} WHERE {key} = %s ORDER BY ts DESC LIMIT 1"
        ).format(**names),
        [key],
    )


async def log_deletion(
    conn: Conn,
    kind: str,
    device_id: str,
    lo: datetime,
    hi: datetime,
    deleted: int,
    kwh: float,
    reason: str | None,
    by: str,
) -> int:
    cur = await conn.execute(
        "INSERT INTO reading_deletions (kind, device_id, from_ts, to_ts, deleted, deleted_kwh, reason, deleted_by)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING deletion_id",
        [kind, device_id, lo, hi, deleted, kwh, reason, by],
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])
