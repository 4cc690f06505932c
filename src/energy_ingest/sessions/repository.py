"""SQL of `charging_sessions`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from energy_ingest.db.pool import Conn

_COLUMNS = (
    "session_id, charger_id, connector_id, meter_id, id_tag, vehicle_id, id_tag_status, started_at,"
    " meter_start_wh, stopped_at, meter_stop_wh, stop_reason, ended_by, soc_first, soc_first_at, soc_last,"
    " soc_last_at, link_id, link_note"
)


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: int
    charger_id: str
    connector_id: int
    meter_id: str
    id_tag: str
    vehicle_id: str | None
    id_tag_status: str
    started_at: datetime
    meter_start_wh: int
    stopped_at: datetime | None
    meter_stop_wh: int | None
    stop_reason: str | None
    ended_by: str | None
    soc_first: float | None
    soc_first_at: datetime | None
    soc_last: float | None
    soc_last_at: datetime | None
    link_id: int | None
    link_note: str | None


async def lock_charger(conn: Conn, charger_id: str) -> None:
    """One charger's session changes happen one at a time, whichever worker holds its connection."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('ocpp:' || %s, 0))", [charger_id])


async def find(conn: Conn, charger_id: str, connector_id: int, started_at: datetime) -> SessionRow | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM charging_sessions WHERE charger_id = %s AND connector_id = %s AND started_at = %s",
        [charger_id, connector_id, started_at],
    )
    row = await cur.fetchone()
    return SessionRow(*row) if row else None


async def by_id(conn: Conn, session_id: int) -> SessionRow | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM charging_sessions WHERE session_id = %s", [session_id])
    row = await cur.fetchone()
    return SessionRow(*row) if row else None


async def open_sessions(conn: Conn, charger_id: str, connector_id: int | None = None) -> list[SessionRow]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM charging_sessions WHERE charger_id = %(charger)s AND stopped_at IS NULL"
        " AND (%(connector)s::int IS NULL OR connector_id = %(connector)s) ORDER BY started_at",
        {"charger": charger_id, "connector": connector_id},
    )
    return [SessionRow(*row) for row in await cur.fetchall()]


async def insert(
    conn: Conn,
    charger_id: str,
    connector_id: int,
    meter_id: str,
    id_tag: str,
    vehicle_id: str | None,
    id_tag_status: str,
    started_at: datetime,
    meter_start_wh: int,
) -> SessionRow:
    cur = await conn.execute(
        "INSERT INTO charging_sessions (charger_id, connector_id, meter_id, id_tag, vehicle_id, id_tag_status,"
        f" started_at, meter_start_wh) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        [charger_id, connector_id, meter_id, id_tag, vehicle_id, id_tag_status, started_at, meter_start_wh],
    )
    row = await cur.fetchone()
    assert row is not None
    return SessionRow(*row)


async def set_link(conn: Conn, session_id: int, link_id: int | None, note: str | None) -> None:
    await conn.execute(
        "UPDATE charging_sessions SET link_id = %s, link_note = %s WHERE session_id = %s", [link_id, note, session_id]
    )


async def stop(
    conn: Conn,
    session_id: int,
    stopped_at: datetime,
    meter_stop_wh: int | None,
    reason: str | None,
    ended_by: str,
) -> None:
    await conn.execute(
        "UPDATE charging_sessions SET stopped_at = %s, meter_stop_wh = %s, stop_reason = %s, ended_by = %s"
        " WHERE session_id = %s",
        [stopped_at, meter_stop_wh, reason, ended_by, session_id],
    )


async def record_soc(conn: Conn, charger_id: str, session_id: int, soc: float, at: datetime) -> None:
    """Keep the earliest and the latest SoC by measurement time, whatever order they arrive in (of the
    charger's own session only)."""
    await conn.execute(
        "UPDATE charging_sessions SET"
        " soc_first = CASE WHEN soc_first_at IS NULL OR %(at)s < soc_first_at THEN %(soc)s ELSE soc_first END,"
        " soc_first_at = CASE WHEN soc_first_at IS NULL OR %(at)s < soc_first_at THEN %(at)s ELSE soc_first_at END,"
        " soc_last = CASE WHEN soc_last_at IS NULL OR %(at)s >= soc_last_at THEN %(soc)s ELSE soc_last END,"
        " soc_last_at = CASE WHEN soc_last_at IS NULL OR %(at)s >= soc_last_at THEN %(at)s ELSE soc_last_at END"
        " WHERE session_id = %(session)s AND charger_id = %(charger)s",
        {"soc": soc, "at": at, "session": session_id, "charger": charger_id},
    )


async def page(
    conn: Conn,
    *,
    vehicle_id: str | None,
    charger_id: str | None,
    start: datetime | None,
    end: datetime | None,
    before: tuple[datetime, int] | None,
    limit: int,
) -> list[SessionRow]:
    """Sessions that overlap [start, end), newest start first, after the cursor `before`."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM charging_sessions"
        " WHERE (%(vehicle)s::text IS NULL OR vehicle_id = %(vehicle)s)"
        " AND (%(charger)s::text IS NULL OR charger_id = %(charger)s)"
        " AND (%(end)s::timestamptz IS NULL OR started_at < %(end)s)"
        " AND (%(start)s::timestamptz IS NULL OR stopped_at IS NULL OR stopped_at > %(start)s)"
        " AND (%(before_ts)s::timestamptz IS NULL OR (started_at, session_id) < (%(before_ts)s, %(before_id)s))"
        " ORDER BY started_at DESC, session_id DESC LIMIT %(limit)s",
        {
            "vehicle": vehicle_id,
            "charger": charger_id,
            "start": start,
            "end": end,
            "before_ts": before[0] if before else None,
            "before_id": before[1] if before else None,
            "limit": limit,
        },
    )
    return [SessionRow(*row) for row in await cur.fetchall()]


async def from_id(conn: Conn, first_id: int, started_after: datetime) -> list[SessionRow]:
    """Sessions from `first_id` on that started after `started_after`, by id."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM charging_sessions WHERE session_id >= %s AND started_at > %s ORDER BY session_id",
        [first_id, started_after],
    )
    return [SessionRow(*row) for row in await cur.fetchall()]
