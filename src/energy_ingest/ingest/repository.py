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
from energy_ingest.kinds import METER, VEHICLE, Kind

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


def _stream(kind: Kind) -> StreamSQL:
    """The write statements of one kind, derived from its description."""
    values = ", ".join((*kind.value_columns, "kwh_register"))
    aggregates = ", ".join(a.expr for a in kind.aggregates)
    merges = ",\n    ".join(f"{a.column} = {a.merge}" for a in kind.aggregates if a.column != "hour")
    live = ", ".join(f"{c} = EXCLUDED.{c}" for c in ("ts", "received_at", *kind.value_columns, "kwh_register"))
    return StreamSQL(
        kind=kind.name,
        columns=(
            ("seq", "int4"),
            (kind.key, "int4"),
            ("ts", "timestamptz"),
            ("received_at", "timestamptz"),
            *((v.column, v.sql_type) for v in kind.values),
            ("kwh_register", "float8"),
        ),
        # Sorted so concurrent flushes take index locks in one order; of equal keys the first sent wins.
        insert_cold=f"""
INSERT INTO {kind.readings_table} ({kind.key}, ts, received_at, {values})
SELECT {kind.key}, ts, received_at, {values} FROM {{source}}
ORDER BY {kind.key}, ts, seq
ON CONFLICT DO NOTHING
RETURNING {kind.key}, ts, {values}, excluded_kwh""",
        rollup=f"""
INSERT INTO {kind.rollup_table} AS h ({kind.key}, hour, {", ".join(kind.rollup_columns)})
SELECT {kind.key}, date_trunc('hour', ts, 'UTC'), {aggregates}
FROM {{cold}} GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT ({kind.key}, hour) DO UPDATE
SET {merges}""",
        # The newest reading per device; an older or equal-time one never replaces what is stored.
        upsert_hot=f"""
INSERT INTO {kind.live_table} AS l ({kind.key}, ts, received_at, {values})
SELECT DISTINCT ON ({kind.key}) {kind.key}, ts, received_at, {values} FROM {{source}}
ORDER BY {kind.key}, ts DESC, seq
ON CONFLICT ({kind.key}) DO UPDATE
SET {live}
WHERE l.ts < EXCLUDED.ts""",
    )


METER_SQL = _stream(METER)
VEHICLE_SQL = _stream(VEHICLE)

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


def _names(kind: Kind) -> dict[str, sql.Composable]:
    return {
        "cold": sql.Identifier(kind.readings_table),
        "live": sql.Identifier(kind.live_table),
        "key": sql.Identifier(kind.key),
        "values": sql.SQL(", ").join(
            sql.Identifier(c) for c in ("ts", "received_at", *kind.value_columns, "kwh_register")
        ),
        "energy": sql.Identifier(kind.energy.column),
    }


async def delete_cold(conn: Conn, kind: Kind, key: int, lo: datetime, hi: datetime) -> tuple[list[datetime], float]:
    """Delete one device's readings in [lo, hi); return their times and their energy. In a transaction."""
    names = _names(kind)
    cur = await conn.execute(
        sql.SQL("DELETE FROM {cold} WHERE {key} = %s AND ts >= %s AND ts < %s RETURNING ts, {energy}").format(**names),
        [key, lo, hi],
    )
    rows = await cur.fetchall()
    return [ts for ts, _ in rows], sum(energy for _, energy in rows)


async def restore_live(conn: Conn, kind: Kind, key: int, lo: datetime, hi: datetime) -> None:
    """If the device's live row came from [lo, hi), replace it by its newest remaining reading (or drop it)."""
    names = _names(kind)
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


# Registers: the statements that settle derived energies (see ingest/registers.py).


async def lock_devices(conn: Conn, kind: Kind, keys: Sequence[int]) -> None:
    """Serialize flushes on the same register devices (their energies depend on each other's rows);
    taken in key order, so two flushes never wait on each other both ways."""
    if keys:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, k) FROM (SELECT k FROM unnest(%s::int[]) AS k ORDER BY k) AS s",
            [1 if kind.name == "meter" else 2, sorted(keys)],
        )


async def live_registers(conn: Conn, kind: Kind, keys: Sequence[int]) -> dict[int, tuple[datetime, float | None]]:
    """(ts, register) of each device's newest reading, as stored before this flush."""
    cur = await conn.execute(
        sql.SQL("SELECT {key}, ts, kwh_register FROM {live} WHERE {key} = ANY(%s)").format(**_names(kind)), [list(keys)]
    )
    return {key: (ts, register) for key, ts, register in await cur.fetchall()}


async def register_stretch(
    conn: Conn, kind: Kind, key: int, lo: datetime, hi: datetime
) -> tuple[tuple[datetime, float] | None, list[tuple[datetime, float, float, float | None, int | None]]]:
    """The basis (last reading before `lo` with a non-zero register) and every reading after it up to
    and including the first non-zero register after `hi`: (ts, register, energy, excluded, flags)."""
    names = _names(kind)
    cur = await conn.execute(
        sql.SQL(
            "SELECT ts, kwh_register FROM {cold} WHERE {key} = %s AND ts < %s AND kwh_register > 0"
            " ORDER BY ts DESC LIMIT 1"
        ).format(**names),
        [key, lo],
    )
    basis = await cur.fetchone()
    cur = await conn.execute(
        sql.SQL("SELECT ts FROM {cold} WHERE {key} = %s AND ts > %s AND kwh_register > 0 ORDER BY ts LIMIT 1").format(
            **names
        ),
        [key, hi],
    )
    end = await cur.fetchone()
    cur = await conn.execute(
        sql.SQL(
            "SELECT ts, kwh_register, {energy}, excluded_kwh, register_flags FROM {cold}"
            " WHERE {key} = %s AND ts > %s AND ts <= %s ORDER BY ts"
        ).format(**names),
        [key, basis[0] if basis else datetime.min.replace(tzinfo=lo.tzinfo), end[0] if end else hi],
    )
    return (basis[0], basis[1]) if basis else None, await cur.fetchall()


# A change to one reading: (device key, ts, old energy, new energy, old excluded, new excluded, flags).
Change = tuple[int, datetime, float, float, float, float, int]


async def set_derived(conn: Conn, kind: Kind, changes: Sequence[Change]) -> None:
    """Store derived energies, exclusions and flags on readings, and move their rollup hours by the
    difference, cast to numeric as the rollup insert casts them, so sums stay equal to raw sums."""
    if not changes:
        return
    names = _names(kind)
    columns = [[c[i] for c in changes] for i in range(7)]
    stamps = [c[1] for c in changes]
    lo, hi = min(stamps), max(stamps)
    await conn.execute(
        sql.SQL(
            "UPDATE {cold} c SET {energy} = u.energy, excluded_kwh = nullif(u.excluded, 0),"
            " register_flags = nullif(u.flags, 0)"
            " FROM unnest(%s::int[], %s::timestamptz[], %s::float8[], %s::float8[], %s::int2[])"
            " AS u(key, ts, energy, excluded, flags)"
            " WHERE c.{key} = u.key AND c.ts = u.ts AND c.ts >= %s AND c.ts <= %s"
        ).format(**names),
        [columns[0], columns[1], columns[3], columns[5], columns[6], lo, hi],
    )
    await conn.execute(
        sql.SQL(
            "UPDATE {rollup} h SET kwh = h.kwh + d.kwh, excluded_kwh = h.excluded_kwh + d.excluded"
            " FROM (SELECT key, date_trunc('hour', ts, 'UTC') AS hour, sum(e1::numeric - e0::numeric) AS kwh,"
            " sum(x1::numeric - x0::numeric) AS excluded"
            " FROM unnest(%s::int[], %s::timestamptz[], %s::float8[], %s::float8[], %s::float8[], %s::float8[])"
            " AS u(key, ts, e0, e1, x0, x1) GROUP BY 1, 2) d"
            " WHERE h.{key} = d.key AND h.hour = d.hour AND h.hour >= %s AND h.hour <= %s"
        ).format(rollup=sql.Identifier(kind.rollup_table), **names),
        [*columns[:6], lo.replace(minute=0, second=0, microsecond=0), hi],
    )


async def set_live_energy(conn: Conn, kind: Kind, newest: Sequence[tuple[int, datetime, float]]) -> None:
    """The derived energy of readings that are their device's newest (others are left alone)."""
    if newest:
        await conn.execute(
            sql.SQL(
                "UPDATE {live} l SET {energy} = u.energy FROM unnest(%s::int[], %s::timestamptz[], %s::float8[])"
                " AS u(key, ts, energy) WHERE l.{key} = u.key AND l.ts = u.ts"
            ).format(**_names(kind)),
            [[n[0] for n in newest], [n[1] for n in newest], [n[2] for n in newest]],
        )


async def replace_events(
    conn: Conn,
    kind: Kind,
    stretches: Sequence[tuple[int, datetime | None, datetime]],
    events: Sequence[tuple[int, datetime, str, float, float]],
) -> None:
    """Make devices' recorded resets and placeholders in each (key, after, until] stretch what the
    sequence says now: `events` (key, ts, event, register, previous)."""
    if stretches:
        await conn.execute(
            "DELETE FROM register_events e USING unnest(%s::int[], %s::timestamptz[], %s::timestamptz[])"
            " AS r(key, after, until)"
            " WHERE e.kind = %s AND e.device_key = r.key AND e.ts > coalesce(r.after, '-infinity') AND e.ts <= r.until",
            [[s[0] for s in stretches], [s[1] for s in stretches], [s[2] for s in stretches], kind.name],
        )
    if events:
        await conn.execute(
            "INSERT INTO register_events (kind, device_key, ts, event, register, previous)"
            " SELECT %s, * FROM unnest(%s::int[], %s::timestamptz[], %s::text[], %s::float8[], %s::float8[])"
            " ON CONFLICT (kind, device_key, ts) DO UPDATE"
            " SET event = EXCLUDED.event, register = EXCLUDED.register, previous = EXCLUDED.previous",
            [kind.name, *([e[i] for e in events] for i in range(5))],
        )
