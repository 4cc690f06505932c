"""The live state as other domains read it (the alert rules): who went silent, what each device sent last,
and the register events recorded since some moment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from energy_ingest.db.pool import Conn
from energy_ingest.kinds import Kind
from energy_ingest.live import repository


@dataclass(frozen=True, slots=True)
class LastHeard:
    device_id: str
    ts: datetime  # the newest reading's measurement time
    received_at: datetime  # when that reading arrived


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    kind: str  # "meter" or "vehicle"
    device_id: str
    ts: datetime
    event: str  # "reset" or "placeholder"
    register: float
    previous: float
    recorded_at: datetime


async def silent_since(conn: Conn, kind: Kind, before: datetime) -> list[LastHeard]:
    """Devices of `kind` whose newest reading was received before `before`."""
    return [LastHeard(*row) for row in await repository.received_before(conn, kind, before)]


async def last_heard(conn: Conn, kind: Kind, device_ids: list[str]) -> dict[str, LastHeard]:
    """The newest reading of each device that has one, by id."""
    if not device_ids:
        return {}
    return {row[0]: LastHeard(*row) for row in await repository.last_heard(conn, kind, device_ids)}


async def events_recorded_after(conn: Conn, after: datetime | None) -> list[RecordedEvent]:
    """Resets and zero placeholders recorded after `after` (every one when None), by device and time."""
    return [RecordedEvent(*row) for row in await repository.events_recorded_after(conn, after)]
