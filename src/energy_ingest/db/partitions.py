"""Daily range partitions of the cold reading tables, created ahead and on demand."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from psycopg import sql

from energy_ingest.db.pool import Conn

READING_TABLES = ("meter_readings", "vehicle_readings")
# Partitions kept ready before readings arrive: yesterday (late readings) to the day after tomorrow.
DAYS_BEHIND = 1
DAYS_AHEAD = 2


def partition_name(table: str, day: date) -> str:
    return f"{table}_{day:%Y%m%d}"


def day_of(ts: datetime) -> date:
    return ts.astimezone(UTC).date()


class PartitionKeeper:
    """Knows which daily partitions exist in this process's view and creates the missing ones."""

    def __init__(self) -> None:
        self._known: set[tuple[str, date]] = set()

    def missing(self, table: str, days: Iterable[date]) -> set[date]:
        return {d for d in days if (table, d) not in self._known}

    def forget(self) -> None:
        self._known.clear()

    async def ensure(self, conn: Conn, table: str, days: Iterable[date]) -> None:
        todo = sorted(self.missing(table, days))
        if not todo:
            return
        async with conn.transaction():
            # Serialises creation across workers; IF NOT EXISTS makes the losers no-ops.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [table])
            for day in todo:
                start = datetime(day.year, day.month, day.day, tzinfo=UTC)
                await conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {part} PARTITION OF {table} FOR VALUES FROM ({lo}) TO ({hi})"
                    ).format(
                        part=sql.Identifier(partition_name(table, day)),
                        table=sql.Identifier(table),
                        lo=sql.Literal(start),
                        hi=sql.Literal(start + timedelta(days=1)),
                    )
                )
        self._known.update((table, d) for d in todo)

    async def ensure_window(self, conn: Conn, today: date) -> None:
        days = [today + timedelta(days=n) for n in range(-DAYS_BEHIND, DAYS_AHEAD + 1)]
        for table in READING_TABLES:
            await self.ensure(conn, table, days)
