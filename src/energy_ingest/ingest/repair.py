"""Repairs: delete one device's readings over a range, keeping rollups and live state exact.

For readings that should never have been accepted (a faulty meter, a test device). One transaction
takes the locks in the write path's order: raw readings, then their rollup hours (recomputed from
what remains), then the live row (the newest remaining reading). Every deletion is logged in
`reading_deletions` and in the service log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from energy_ingest.db.pool import Conn
from energy_ingest.devices import repository as devices
from energy_ingest.devices.repository import DeviceKind
from energy_ingest.errors import Conflict, InvalidInput, NotFound
from energy_ingest.ingest import registers
from energy_ingest.ingest import repository as repo
from energy_ingest.kinds import BY_NAME
from energy_ingest.rollups.rebuild import recompute_hours

log = logging.getLogger("energy_ingest.repair")


class UnknownDevice(NotFound):
    """No meter or vehicle has that id."""


class AmbiguousDevice(Conflict):
    """Both a meter and a vehicle have that id: the kind must be named."""


@dataclass(frozen=True, slots=True)
class Deletion:
    deletion_id: int
    kind: DeviceKind
    device_id: str
    start: datetime
    end: datetime
    deleted: int
    deleted_kwh: float


async def delete_readings(
    conn: Conn,
    device_id: str,
    start: datetime,
    end: datetime,
    *,
    kind: DeviceKind | None = None,
    reason: str | None = None,
    by: str,
    max_interval_kw: float = 350.0,
) -> Deletion:
    """Delete `device_id`'s readings in [start, end) and log it; `conn` must be in autocommit mode."""
    if start >= end:
        raise InvalidInput("`from` must be before `to`", errors=[{"field": "from", "reason": "not before `to`"}])
    kinds: list[DeviceKind] = [kind] if kind else ["meter", "vehicle"]
    found = {k: key for k in kinds if (key := await devices.find(conn, k, device_id)) is not None}
    if not found:
        raise UnknownDevice(f"no {kind or 'meter or vehicle'} has the id {device_id!r}")
    if len(found) > 1:
        raise AmbiguousDevice(f"both a meter and a vehicle have the id {device_id!r}: name the kind")
    ((device_kind, key),) = found.items()
    async with conn.transaction():
        kind_of = BY_NAME[device_kind]
        await repo.lock_devices(conn, kind_of, [key])  # as a flush of register readings would
        times, kwh = await repo.delete_cold(conn, kind_of, key, start, end)
        if times and await devices.form_of(conn, device_kind, key) == "register":
            # A register device's readings after the gap now rise from the last one before it.
            await registers.resettle(conn, kind_of, key, min(times), max(times), max_interval_kw)
        if times:
            hours = sorted({t.replace(minute=0, second=0, microsecond=0) for t in times})
            await recompute_hours(conn, kind_of, key, hours)
            await repo.restore_live(conn, kind_of, key, start, end)
        deletion_id = await repo.log_deletion(conn, device_kind, device_id, start, end, len(times), kwh, reason, by)
    log.warning(
        "deletion %d by %s: %d readings (%.6f kWh) of %s %s in [%s, %s)%s",
        deletion_id,
        by,
        len(times),
        kwh,
        device_kind,
        device_id,
        start.isoformat(),
        end.isoformat(),
        f", reason: {reason}" if reason else "",
    )
    return Deletion(deletion_id, device_kind, device_id, start, end, len(times), kwh)
