"""Daily range partitions (UTC) of the reading and rollup tables, created ahead and on demand."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from psycopg import sql

from energy_ingest.db.pool import Conn

PARTITIONED = ("meter_readings", "vehicle_readings", "meter_hourly", "vehicle_hourly")
# A rollup row is updated by every flush of its hour (up to 60 times a device-hour): room on the
# page keeps those updates HOT, and pruning then reclaims the old versions in place.
STORAGE = {"meter_hourly": "WITH (fillfactor = 50)", "vehicle_hourly": "WITH (fillfactor = 50)"}
# Kept ready before readings arrive: yesterday (late readings) to the day after tomorrow.
DAYS_BEHIND = 1
DAYS_AHEAD = 2


def day_of(ts: datetime) -> date:
    return ts.astimezone(UTC).date()


def partition_name(table: str, day: date) -> str:
    return f"{table}_{day:%Y%m%d}"


def _utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class PartitionKeeper:
    """Knows which partitions exist in this process's view and creates the missing ones."""

    def __init__(self) -> None:
        self._known: dict[str, set[date]] = {table: set() for table in PARTITIONED}

    def forget(self) -> None:
        for known in self._known.values():
            known.clear()

    async def ensure(self, conn: Conn, table: str, days: Iterable[date]) -> None:
        """Make sure `table` has a partition for each of `days`."""
        todo = sorted(set(days) - self._known[table])
        if not todo:
            return
        async with conn.transaction():
            # Serialises creation across workers; IF NOT EXISTS makes the losers no-ops.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [table])
            for day in todo:
                await conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {part} PARTITION OF {table}"
                        " FOR VALUES FROM ({lo}) TO ({hi}) {storage}"
                    ).format(
                        part=sql.Identifier(partition_name(table, day)),
                        table=sql.Identifier(table),
                        lo=sql.Literal(_utc(day)),
                        hi=sql.Literal(_utc(day + timedelta(days=1))),
                        storage=sql.SQL(STORAGE.get(table, "")),
                    )
                )
        self._known[table].update(todo)

    async def ensure_window(self, conn: Conn, today: date) -> None:
        days = [today + timedelta(days=n) for n in range(-DAYS_BEHIND, DAYS_AHEAD + 1)]
        for table in PARTITIONED:
            await self.ensure(conn, table, days)


_RETENTION_LOCK = 0x72657465
_LIST_PARTITIONS = """
SELECT c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = %s
ORDER BY c.relname
"""


async def drop_expired(conn: Conn, today: date, raw_days: int, rollup_days: int) -> list[str]:
    """Drop the daily partitions past retention; returns their names. Needs an autocommit connection.

    DETACH … CONCURRENTLY takes only a SHARE UPDATE EXCLUSIVE lock on the parent, so inserts into
    the other partitions go on meanwhile. With several workers, whoever holds the lock does it.
    """
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", [_RETENTION_LOCK])
    row = await cur.fetchone()
    if not row or not row[0]:
        return []
    dropped: list[str] = []
    try:
        for table in PARTITIONED:
            keep = raw_days if table.endswith("_readings") else rollup_days
            oldest = today - timedelta(days=keep)
            cur = await conn.execute(_LIST_PARTITIONS, [table])
            for (name,) in await cur.fetchall():
                suffix = name.removeprefix(f"{table}_")
                if not (len(suffix) == 8 and suffix.isdigit()):
                    continue
                if datetime.strptime(suffix, "%Y%m%d").date() >= oldest:
                    continue
                await conn.execute(
                    sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(
                        sql.Identifier(table), sql.Identifier(name)
                    )
                )
                await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                await conn.execute("DELETE FROM compacted_partitions WHERE name = %s", [name])
                dropped.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", [_RETENTION_LOCK])
    return dropped


_COMPACTION_LOCK = 0x636F6D70
# Partitions never compacted, or grown by more than a tenth since (a backfill into an ended day).
_UNCOMPACTED_PARTITIONS = """
SELECT c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
LEFT JOIN compacted_partitions d ON d.name = c.relname
WHERE p.relname = %s AND pg_relation_size(c.oid) > 0
  AND (d.name IS NULL OR pg_relation_size(c.oid) > d.heap_bytes * 1.1)
ORDER BY c.relname
"""


async def compact_closed_days(conn: Conn, today: date) -> list[str]:
    """Rebuild the indexes of raw partitions whose day has ended: once, and again after a backfill.

    Readings arrive in time order, so their (device, time) index splits pages half full all day;
    rebuilt once the day is over, it packs them (about 41 → 30 bytes per reading).
    REINDEX … CONCURRENTLY lets late readings into that day go on meanwhile.
    """
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", [_COMPACTION_LOCK])
    row = await cur.fetchone()
    if not row or not row[0]:
        return []
    done: list[str] = []
    try:
        for table in ("meter_readings", "vehicle_readings"):
            cur = await conn.execute(_UNCOMPACTED_PARTITIONS, [table])
            for (name,) in await cur.fetchall():
                suffix = name.removeprefix(f"{table}_")
                if not (len(suffix) == 8 and suffix.isdigit()) or datetime.strptime(suffix, "%Y%m%d").date() >= today:
                    continue
                await conn.execute(sql.SQL("REINDEX TABLE CONCURRENTLY {}").format(sql.Identifier(name)))
                await conn.execute(
                    "INSERT INTO compacted_partitions (name, heap_bytes)"
                    " VALUES (%(name)s, pg_relation_size(%(relation)s::regclass))"
                    " ON CONFLICT (name) DO UPDATE SET heap_bytes = EXCLUDED.heap_bytes, compacted_at = now()",
                    {"name": name, "relation": name},
                )
                done.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", [_COMPACTION_LOCK])
    return done
