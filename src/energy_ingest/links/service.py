"""Linking rules: a vehicle has one meter at a time, a meter serves one vehicle at a time."""

from __future__ import annotations

from datetime import datetime

from energy_ingest.db.pool import Conn, Pool
from energy_ingest.errors import Conflict, NotFound
from energy_ingest.links import repository as repo
from energy_ingest.links.repository import LinkRow


def _fmt(ts: datetime | None) -> str:
    return "open end" if ts is None else ts.isoformat().replace("+00:00", "Z")


async def link(pool: Pool, vehicle_id: str, meter_id: str, start: datetime) -> tuple[LinkRow, bool]:
    """Link the vehicle to the meter from `start` on; return the link and whether it is new.

    The vehicle's link in force at `start` ends there. Re-linking to the meter it already
    has is a no-op.
    """
    async with pool.connection() as conn, conn.transaction():
        return await link_on(conn, vehicle_id, meter_id, start)


async def link_on(
    conn: Conn, vehicle_id: str, meter_id: str, start: datetime, *, session_id: int | None = None
) -> tuple[LinkRow, bool]:
    """`link`, inside the caller's transaction; a `session_id` marks the link as made by that
    charging session (source `ocpp`)."""
    await repo.lock(conn)
    links = await repo.vehicle_links(conn, vehicle_id)
    in_force = None
    for row in links:
        if row.valid_to is not None and row.valid_to <= start:
            continue
        if row.valid_from <= start:
            in_force = row
        else:
            raise Conflict(
                f"vehicle {vehicle_id} already has a link (to meter {row.meter_id}) starting at "
                f"{_fmt(row.valid_from)}, after `from`; delete or end it first",
                title="Conflicting link",
            )
    if (
        in_force is not None
        and in_force.meter_id == meter_id
        and in_force.valid_to is None
        and in_force.session_id == session_id
    ):
        return in_force, False
    for row in await repo.meter_links_after(conn, meter_id, start):
        if in_force is not None and row.link_id == in_force.link_id:
            continue
        raise Conflict(
            f"meter {meter_id} serves vehicle {row.vehicle_id} from {_fmt(row.valid_from)} to "
            f"{_fmt(row.valid_to)}, which overlaps the new link; a meter serves one vehicle at a time",
            title="Conflicting link",
        )
    if in_force is not None:
        if in_force.valid_from == start:
            await repo.delete_link(conn, in_force.link_id)
        else:
            await repo.end_link(conn, in_force.link_id, start)
    source = "manual" if session_id is None else "ocpp"
    return await repo.insert_link(conn, vehicle_id, meter_id, start, source, session_id), True


async def unlink(pool: Pool, vehicle_id: str, now: datetime) -> LinkRow:
    """End the vehicle's open link now (a link that has not started yet is removed)."""
    async with pool.connection() as conn, conn.transaction():
        await repo.lock(conn)
        open_links = [row for row in await repo.vehicle_links(conn, vehicle_id) if row.valid_to is None]
        if not open_links:
            raise NotFound(f"vehicle {vehicle_id} has no current meter link")
        row = open_links[-1]
        if row.valid_from >= now:
            await repo.delete_link(conn, row.link_id)
            return row
        await repo.end_link(conn, row.link_id, now)
        return LinkRow(row.link_id, row.vehicle_id, row.meter_id, row.valid_from, now, row.source, row.session_id)


async def end_on(conn: Conn, link_id: int, at: datetime) -> None:
    """End a link at `at` inside the caller's transaction, if it still runs past it (a link that would
    end before it starts is removed). A link already ended earlier stays as it is."""
    await repo.lock(conn)
    row = await repo.link_by_id(conn, link_id)
    if row is None or (row.valid_to is not None and row.valid_to <= at):
        return
    if at <= row.valid_from:
        await repo.delete_link(conn, link_id)
    else:
        await repo.end_link(conn, link_id, at)


async def history(pool: Pool, vehicle_id: str) -> list[LinkRow]:
    async with pool.connection() as conn:
        return await repo.vehicle_links(conn, vehicle_id)
