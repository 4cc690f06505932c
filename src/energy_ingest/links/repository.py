"""SQL of `vehicle_meter_links`."""

from __future__ import annotations

from datetime import datetime

import msgspec
from psycopg.rows import class_row

from energy_ingest.db.pool import Conn

# One lock for every link change: changes are rare, and one order makes the overlap checks exact.
_LINKS_LOCK = 0x6C696E6B


class LinkRow(msgspec.Struct, frozen=True):
    link_id: int
    vehicle_id: str
    meter_id: str
    valid_from: datetime
    valid_to: datetime | None
    source: str = "manual"  # or "ocpp": made by a charging session
    session_id: int | None = None


_COLUMNS = "link_id, vehicle_id, meter_id, valid_from, valid_to, source, session_id"


async def lock(conn: Conn) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LINKS_LOCK])


async def vehicle_links(conn: Conn, vehicle_id: str) -> list[LinkRow]:
    async with conn.cursor(row_factory=class_row(LinkRow)) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM vehicle_meter_links WHERE vehicle_id = %s ORDER BY valid_from",
            [vehicle_id],
        )
        return await cur.fetchall()


async def meter_links_after(conn: Conn, meter_id: str, start: datetime) -> list[LinkRow]:
    """The meter's links that are still in force at or after `start`."""
    async with conn.cursor(row_factory=class_row(LinkRow)) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM vehicle_meter_links"
            " WHERE meter_id = %s AND (valid_to IS NULL OR valid_to > %s) ORDER BY valid_from",
            [meter_id, start],
        )
        return await cur.fetchall()


async def end_link(conn: Conn, link_id: int, at: datetime) -> None:
    await conn.execute("UPDATE vehicle_meter_links SET valid_to = %s WHERE link_id = %s", [at, link_id])


async def delete_link(conn: Conn, link_id: int) -> None:
    await conn.execute("DELETE FROM vehicle_meter_links WHERE link_id = %s", [link_id])


async def link_by_id(conn: Conn, link_id: int) -> LinkRow | None:
    async with conn.cursor(row_factory=class_row(LinkRow)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM vehicle_meter_links WHERE link_id = %s", [link_id])
        return await cur.fetchone()


async def insert_link(
    conn: Conn, vehicle_id: str, meter_id: str, start: datetime, source: str = "manual", session_id: int | None = None
) -> LinkRow:
    async with conn.cursor(row_factory=class_row(LinkRow)) as cur:
        await cur.execute(
            "INSERT INTO vehicle_meter_links (vehicle_id, meter_id, valid_from, source, session_id)"
            f" VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            [vehicle_id, meter_id, start, source, session_id],
        )
        row = await cur.fetchone()
        assert row is not None
        return row
