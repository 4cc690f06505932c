"""Charging sessions as the correlation: a started transaction for a tag that stands for a vehicle links
the vehicle to the connector's meter, and its stop ends the link.

The link covers (start, stop]: a meter reading carries the energy of the interval that ends at its
time, so the reading taken at the start belongs to before the session and the one at the stop to it.
Links are [from, to), so an OCPP link runs from start + 1 µs to stop + 1 µs.

A transaction that never stops (the charger went offline) is closed by inference at the charger's
next BootNotification or at the next StartTransaction on that connector; if the charger later sends
the real StopTransaction, the real stop replaces the inferred one (a stop only ever shortens a link).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

from energy_ingest import cursors
from energy_ingest.analytics import service as analytics
from energy_ingest.db.pool import Conn, Pool
from energy_ingest.errors import Conflict, InvalidInput, NotFound
from energy_ingest.links import service as links
from energy_ingest.sessions import repository as repo
from energy_ingest.sessions.repository import SessionRow

LINK_OFFSET = timedelta(microseconds=1)
MAX_LIMIT = 200

EndedBy = Literal["charger", "inferred"]


class Session(msgspec.Struct, rename="camel"):
    session_id: int  # the OCPP transactionId
    charger_id: str
    connector_id: int
    meter_id: str
    id_tag: str
    vehicle_id: str | None
    id_tag_status: str
    start: datetime
    stop: datetime | None
    stop_reason: str | None
    ended_by: EndedBy | None
    meter_start: int  # Wh, as the charger sent it
    meter_stop: int | None
    duration_s: float  # up to the stop, or up to now while it runs
    energy_kwh: float  # AC the meter drew over (start, stop], by the counter rules
    excluded_kwh: float  # implausible register rises left out of energy_kwh
    dc_kwh: float | None  # DC the vehicle stored meanwhile, when it sent readings
    efficiency: float | None
    soc_first: float | None
    soc_last: float | None
    linked: bool  # whether the session linked its vehicle to the meter
    link_note: str | None  # why it did not, when it could not


class SessionPage(msgspec.Struct, rename="camel"):
    sessions: list[Session]
    next_cursor: str | None


async def _close(
    conn: Conn, row: SessionRow, at: datetime, meter_stop_wh: int | None, reason: str | None, ended_by: EndedBy
) -> None:
    at = max(at, row.started_at)
    await repo.stop(conn, row.session_id, at, meter_stop_wh, reason, ended_by)
    if row.link_id is not None:
        await links.end_on(conn, row.link_id, at + LINK_OFFSET)


async def start(
    pool: Pool,
    *,
    charger_id: str,
    connector_id: int,
    meter_id: str,
    id_tag: str,
    id_tag_status: str,
    vehicle_id: str | None,
    started_at: datetime,
    meter_start_wh: int,
) -> SessionRow:
    """The session of a StartTransaction (the same one if the charger sends it again)."""
    async with pool.connection() as conn, conn.transaction():
        await repo.lock_charger(conn, charger_id)
        existing = await repo.find(conn, charger_id, connector_id, started_at)
        if existing is not None:
            return existing
        for open_row in await repo.open_sessions(conn, charger_id, connector_id):
            if open_row.started_at < started_at:
                await _close(conn, open_row, started_at, None, None, "inferred")
        row = await repo.insert(
            conn, charger_id, connector_id, meter_id, id_tag, vehicle_id, id_tag_status, started_at, meter_start_wh
        )
        if vehicle_id is not None and id_tag_status == "Accepted":
            try:
                async with conn.transaction():  # a savepoint: a refused link leaves the session standing
                    link, _ = await links.link_on(
                        conn, vehicle_id, meter_id, started_at + LINK_OFFSET, session_id=row.session_id
                    )
                await repo.set_link(conn, row.session_id, link.link_id, None)
            except Conflict as exc:
                await repo.set_link(conn, row.session_id, None, exc.detail)
        fresh = await repo.by_id(conn, row.session_id)
        assert fresh is not None
        return fresh


async def stop(
    pool: Pool,
    *,
    charger_id: str,
    session_id: int,
    stopped_at: datetime,
    meter_stop_wh: int,
    reason: str | None,
) -> SessionRow | None:
    """Stop the charger's transaction; None if it has no such transaction. A repeated stop changes nothing."""
    async with pool.connection() as conn, conn.transaction():
        await repo.lock_charger(conn, charger_id)
        row = await repo.by_id(conn, session_id)
        if row is None or row.charger_id != charger_id:
            return None
        if row.ended_by != "charger":
            await _close(conn, row, stop_time(row, stopped_at), meter_stop_wh, reason, "charger")
        return await repo.by_id(conn, session_id)


def stop_time(row: SessionRow, stopped_at: datetime) -> datetime:
    """When a StopTransaction stamped `stopped_at` ends this session. One closed by inference at the next
    start or boot had stopped by then: a later clock reading of the charger's must not reach into the
    next session."""
    if row.ended_by == "inferred" and row.stopped_at is not None:
        return min(stopped_at, row.stopped_at)
    if row.ended_by == "charger":  # a stop sent again
        return stopped_at
    return max(stopped_at, row.started_at)


async def close_open(pool: Pool, charger_id: str, at: datetime) -> int:
    """At a BootNotification: the charger's transactions still open were cut off; close them at `at`."""
    async with pool.connection() as conn, conn.transaction():
        await repo.lock_charger(conn, charger_id)
        closed = 0
        for row in await repo.open_sessions(conn, charger_id):
            if row.started_at < at:
                await _close(conn, row, at, None, None, "inferred")
                closed += 1
        return closed


async def record_soc(pool: Pool, charger_id: str, session_id: int, soc: float, at: datetime) -> None:
    async with pool.connection() as conn:
        await repo.record_soc(conn, charger_id, session_id, soc, at)


async def find(pool: Pool, charger_id: str, session_id: int) -> SessionRow | None:
    """The charger's transaction, or None (another charger's transaction is not its own)."""
    async with pool.connection() as conn:
        row = await repo.by_id(conn, session_id)
    return row if row is not None and row.charger_id == charger_id else None


async def open_session_ids(pool: Pool, charger_id: str) -> dict[int, int]:
    """connector → its open session."""
    async with pool.connection() as conn:
        return {row.connector_id: row.session_id for row in await repo.open_sessions(conn, charger_id)}


# reading


async def _views(conn: Conn, rows: list[SessionRow], now: datetime, raw_retention_days: int) -> list[Session]:
    spans = [
        (row.meter_id, row.vehicle_id, row.started_at + LINK_OFFSET, (row.stopped_at or now) + LINK_OFFSET)
        for row in rows
    ]
    energies = await analytics.exchanges(conn, spans, now, raw_retention_days)
    views = []
    for row, energy in zip(rows, energies, strict=True):
        end = row.stopped_at or now
        views.append(
            Session(
                session_id=row.session_id,
                charger_id=row.charger_id,
                connector_id=row.connector_id,
                meter_id=row.meter_id,
                id_tag=row.id_tag,
                vehicle_id=row.vehicle_id,
                id_tag_status=row.id_tag_status,
                start=row.started_at,
                stop=row.stopped_at,
                stop_reason=row.stop_reason,
                ended_by="charger" if row.ended_by == "charger" else ("inferred" if row.ended_by else None),
                meter_start=row.meter_start_wh,
                meter_stop=row.meter_stop_wh,
                duration_s=max(0.0, (end - row.started_at).total_seconds()),
                energy_kwh=energy.ac_kwh,
                excluded_kwh=energy.excluded_ac_kwh,
                dc_kwh=energy.dc_kwh,
                efficiency=energy.efficiency,
                soc_first=row.soc_first,
                soc_last=row.soc_last,
                linked=row.link_id is not None,
                link_note=row.link_note,
            )
        )
    return views


async def get(pool: Pool, session_id: int, raw_retention_days: int) -> Session:
    async with pool.connection() as conn:
        row = await repo.by_id(conn, session_id)
        if row is None:
            raise NotFound(f"charging session {session_id} does not exist")
        (view,) = await _views(conn, [row], datetime.now(UTC), raw_retention_days)
        return view


async def page(
    pool: Pool,
    *,
    vehicle_id: str | None,
    charger_id: str | None,
    start: datetime | None,
    end: datetime | None,
    cursor: str | None,
    limit: int,
    raw_retention_days: int,
) -> SessionPage:
    if start is not None and end is not None and start >= end:
        raise InvalidInput("`from` must be before `to`", errors=[{"field": "from", "reason": "not before `to`"}])
    before = cursors.parse(cursor)
    async with pool.connection() as conn:
        rows = await repo.page(
            conn, vehicle_id=vehicle_id, charger_id=charger_id, start=start, end=end, before=before, limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        views = await _views(conn, rows, datetime.now(UTC), raw_retention_days)
    next_cursor = cursors.encode(rows[-1].started_at, rows[-1].session_id) if more else None
    return SessionPage(sessions=views, next_cursor=next_cursor)


# For the session_without_dc alert rule, which judges each session once, in the order of their ids.


async def since(conn: Conn, first_id: int, started_after: datetime) -> list[SessionRow]:
    """Sessions from `first_id` on, by id, but those that started before `started_after`."""
    return await repo.from_id(conn, first_id, started_after)


async def views(conn: Conn, rows: Sequence[SessionRow], raw_retention_days: int) -> list[Session]:
    """The sessions with their energy (one statement for all of them)."""
    return await _views(conn, list(rows), datetime.now(UTC), raw_retention_days) if rows else []
