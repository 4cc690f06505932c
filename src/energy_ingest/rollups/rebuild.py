"""Recompute hourly rollups from raw readings, day by day, and report what differed.

The write path keeps rollups exact as readings arrive; this is for after a restore, a manual
fix in the raw tables, or a schema change. Each day is one transaction that locks its rollup
table against concurrent rollup writes (ingest waits for that day's recompute, then goes on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from psycopg import sql

from energy_ingest.db.partitions import PartitionKeeper
from energy_ingest.db.pool import Conn
from energy_ingest.kinds import METER, VEHICLE, Kind


@dataclass(frozen=True, slots=True)
class _Rollup:
    table: str
    raw: str
    key: str
    aggregates: str  # SELECT list after key and hour, in the rollup table's column order
    columns: tuple[str, ...]


def _rollup(kind: Kind) -> _Rollup:
    aggregates = ", ".join(a.expr for a in kind.aggregates)
    return _Rollup(kind.rollup_table, kind.readings_table, kind.key, aggregates, kind.rollup_columns)


_METER = _rollup(METER)
_VEHICLE = _rollup(VEHICLE)


async def recompute_hours(conn: Conn, kind: Kind, key: int, hours: list[datetime]) -> None:
    """Recompute one device's rollup rows of `hours` from its raw readings (in the caller's transaction)."""
    rollup = _rollup(kind)
    names = {
        "table": sql.Identifier(rollup.table),
        "raw": sql.Identifier(rollup.raw),
        "key": sql.Identifier(rollup.key),
        "aggregates": sql.SQL(rollup.aggregates),  # a constant of this module, never input
        "cols": sql.SQL(", ").join(sql.Identifier(c) for c in rollup.columns),
    }
    # Rows locked in (key, hour) order, like every write of rollups.
    await conn.execute(
        sql.SQL(
            "SELECT 1 FROM {table} WHERE {key} = %(key)s AND hour = ANY(%(hours)s) ORDER BY hour FOR UPDATE"
        ).format(**names),
        {"key": key, "hours": hours},
    )
    await conn.execute(
        sql.SQL("DELETE FROM {table} WHERE {key} = %(key)s AND hour = ANY(%(hours)s)").format(**names),
        {"key": key, "hours": hours},
    )
    await conn.execute(
        sql.SQL(
            "INSERT INTO {table} ({key}, hour, {cols})"
            " SELECT {key}, date_trunc('hour', ts, 'UTC'), {aggregates} FROM {raw}"
            " WHERE {key} = %(key)s AND date_trunc('hour', ts, 'UTC') = ANY(%(hours)s)"
            " AND ts >= %(lo)s AND ts < %(hi)s GROUP BY 1, 2 ORDER BY 1, 2"
        ).format(**names),
        {"key": key, "hours": hours, "lo": min(hours), "hi": max(hours) + timedelta(hours=1)},
    )


@dataclass(frozen=True, slots=True)
class DayResult:
    table: str
    day: date
    rows: int  # rollup rows after the rebuild
    fixed: int  # rows that were missing, extra or different


async def _rebuild_day(conn: Conn, rollup: _Rollup, day: date) -> DayResult:
    lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
    hi = lo + timedelta(days=1)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in rollup.columns)
    fresh_cols = sql.SQL(", ").join(sql.Identifier("f", c) for c in rollup.columns)
    kept_cols = sql.SQL(", ").join(sql.Identifier("h", c) for c in rollup.columns)
    names = {
        "table": sql.Identifier(rollup.table),
        "raw": sql.Identifier(rollup.raw),
        "key": sql.Identifier(rollup.key),
        "aggregates": sql.SQL(rollup.aggregates),  # a constant of this module, never input
        "cols": cols,
        "fresh_cols": fresh_cols,
        "kept_cols": kept_cols,
    }
    async with conn.transaction():
        await conn.execute(sql.SQL("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE").format(**names))
        await conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE fresh ({key}, hour, {cols}) ON COMMIT DROP AS"
                " SELECT {key}, date_trunc('hour', ts, 'UTC'), {aggregates}"
                " FROM {raw} WHERE ts >= %(lo)s AND ts < %(hi)s GROUP BY 1, 2"
            ).format(**names),
            {"lo": lo, "hi": hi},
        )
        cur = await conn.execute(
            sql.SQL(
                "SELECT count(*) FROM fresh f FULL JOIN"
                " (SELECT * FROM {table} WHERE hour >= %(lo)s AND hour < %(hi)s) h USING ({key}, hour)"
                " WHERE ({fresh_cols}) IS DISTINCT FROM ({kept_cols})"
            ).format(**names),
            {"lo": lo, "hi": hi},
        )
        row = await cur.fetchone()
        fixed = int(row[0]) if row else 0
        if fixed:
            await conn.execute(
                sql.SQL("DELETE FROM {table} WHERE hour >= %(lo)s AND hour < %(hi)s").format(**names),
                {"lo": lo, "hi": hi},
            )
            await conn.execute(sql.SQL("INSERT INTO {table} ({key}, hour, {cols}) SELECT * FROM fresh").format(**names))
        cur = await conn.execute("SELECT count(*) FROM fresh")
        row = await cur.fetchone()
    return DayResult(rollup.table, day, int(row[0]) if row else 0, fixed)


async def raw_days(conn: Conn) -> list[date]:
    """Days that have a raw partition (the only days whose rollups can be recomputed)."""
    cur = await conn.execute(
        "SELECT DISTINCT substr(c.relname, length(p.relname) + 2) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
        " WHERE p.relname IN ('meter_readings', 'vehicle_readings')"
    )
    days = []
    for (suffix,) in await cur.fetchall():
        if len(suffix) == 8 and suffix.isdigit():
            days.append(datetime.strptime(suffix, "%Y%m%d").date())
    return sorted(days)


async def rebuild(conn: Conn, start: date | None, end: date | None) -> list[DayResult]:
    """Recompute the rollups of every day in [start, end] that has raw readings (all, by default)."""
    days = [d for d in await raw_days(conn) if (start is None or d >= start) and (end is None or d <= end)]
    keeper = PartitionKeeper()
    results = []
    for rollup in (_METER, _VEHICLE):
        await keeper.ensure(conn, rollup.table, days)
        for day in days:
            results.append(await _rebuild_day(conn, rollup, day))
    return results


def summary(results: list[DayResult]) -> str:
    lines = [f"{r.table} {r.day}: {r.fixed} of {r.rows} rows fixed" for r in results if r.fixed]
    fixed = sum(r.fixed for r in results)
    days = len({r.day for r in results})
    lines.append(
        f"checked {days} days, {sum(r.rows for r in results)} rollup rows; "
        + (f"fixed {fixed} rows that differed from the raw readings" if fixed else "all matched the raw readings")
    )
    return "\n".join(lines)
